// A Go test program for `cargo unikernel pack` (tests/tests/pack.rs):
// goroutines over channels, timers, the garbage collector, a goroutine
// spinning in a loop that only preemption can interrupt, arguments,
// the environment, exit codes and a panic's trace; with the argument
// "http" or "http-self", a net/http service (see serveHTTP).
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "http" || os.Args[1] == "http-self") {
		serveHTTP(os.Args[1] == "http-self")
		return
	}
	fmt.Println("args", os.Args[1:], "GREETING="+os.Getenv("GREETING"))
	if len(os.Args) > 1 && os.Args[1] == "panic" {
		var m map[string]int
		m["x"] = 1
	}
	ch := make(chan int)
	for i := 0; i < 8; i++ {
		go func(i int) {
			time.Sleep(time.Duration(i) * time.Millisecond)
			ch <- i
		}(i)
	}
	sum := 0
	for i := 0; i < 8; i++ {
		sum += <-ch
	}
	fmt.Println("goroutines sum", sum)
	var keep [][]byte
	for i := 0; i < 2000; i++ {
		keep = append(keep, make([]byte, 64<<10))
		if len(keep) > 16 {
			keep = keep[1:]
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Println("gc cycles > 0:", ms.NumGC > 0, "live slices", len(keep))
	go func() {
		for {
		}
	}()
	time.Sleep(20 * time.Millisecond)
	fmt.Println("main ran beside a spinning goroutine")
	os.Exit(4)
}

// serveHTTP listens on :8080 (both IPv4 and IPv6, as Go does by default),
// fetches its own page once over the guest's loopback with net/http's
// client (a POST, over IPv4 and over IPv6), then serves until a request
// for /quit (selfOnly: shuts down at once), and exits 0.
func serveHTTP(selfOnly bool) {
	ln, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	quit := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from go net/http, path %s, %d bytes of body\n", r.URL.Path, r.ContentLength)
	})
	mux.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "bye")
		close(quit)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, url := range []string{"http://127.0.0.1:8080/self", "http://[::1]:8080/self6"} {
		resp, err := client.Post(url, "text/plain", strings.NewReader("twelve bytes"))
		if err != nil {
			fmt.Println("self post:", err)
			os.Exit(1)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Println("self read:", err)
			os.Exit(1)
		}
		fmt.Printf("self: %d %s", resp.StatusCode, body)
	}
	if selfOnly {
		close(quit)
	}
	fmt.Println("serving on", ln.Addr())
	<-quit
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Println("shutdown:", err)
		os.Exit(1)
	}
	fmt.Println("shut down")
}
