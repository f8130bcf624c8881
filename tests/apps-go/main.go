// A Go test program for `cargo unikernel pack` (tests/tests/pack.rs):
// goroutines over channels, timers, the garbage collector, a goroutine
// spinning in a loop that only preemption can interrupt, arguments,
// the environment, exit codes and a panic's trace.
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

func main() {
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
