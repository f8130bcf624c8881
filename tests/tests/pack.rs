//! `cargo unikernel pack`: static executables that cargo did not build
//! become images. The C program `tests/apps-c/hello.c` is compiled here
//! with musl-gcc (Debian's musl-tools; `.ci/run` installs it), as a
//! fixed-address `ET_EXEC` (musl-gcc's default, at 0x400000) and as
//! static-pie, packed and booted; the Go program `tests/apps-go` is built
//! with `go build` (Debian's golang-go, `CGO_ENABLED=0`); each refusal has
//! its message checked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use unikernel_tests::*;

/// A scratch directory of this test binary under target/.
fn work() -> PathBuf {
    let d = root().join("target/pack-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `program --version`-style check of a build tool, or a loud SKIPPED
/// line naming the Debian package.
fn tool_or_skip(test: &str, program: &str, arg: &str, package: &str) -> bool {
    let ok = Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let line =
            format!("SKIPPED {test}: {program} not found (Debian: apt-get install {package})");
        println!("{line}");
        eprintln!("{line}");
    }
    ok
}

/// musl-gcc, or a loud SKIPPED line.
fn musl_gcc(test: &str) -> bool {
    tool_or_skip(test, "musl-gcc", "--version", "musl-tools")
}

/// `go`, or a loud SKIPPED line.
fn go_available(test: &str) -> bool {
    tool_or_skip(test, "go", "version", "golang-go")
}

static COMPILED: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();

/// target/pack-tests/<out>, made once per test binary by the command
/// `make` returns for that path (`what` names it in a failure).
fn built(out: &str, what: &str, make: impl FnOnce(&Path) -> Command) -> PathBuf {
    let mut map = COMPILED.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = map.get(out) {
        return p.clone();
    }
    let path = work().join(out);
    let o = make(&path)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    map.insert(out.to_string(), path.clone());
    path
}

/// `tests/apps-c/<src>.c` compiled with musl-gcc and `flags` into
/// target/pack-tests/<out>, once per test binary.
fn compile(src: &str, out: &str, flags: &[&str]) -> PathBuf {
    built(out, &format!("musl-gcc {flags:?} {src}.c"), |path| {
        let mut c = Command::new("musl-gcc");
        c.args(flags)
            .arg("-O2")
            .arg("-o")
            .arg(path)
            .arg(root().join("tests/apps-c").join(format!("{src}.c")))
            .arg("-lpthread");
        c
    })
}

/// `tests/apps-c/<src>.c` as a static-pie executable. Debian's musl-gcc
/// specs know no `-static-pie` (it would link libc.so), so the start files
/// and libc.a are named by hand, as docs/pack.md shows.
fn compile_static_pie(src: &str, out: &str) -> PathBuf {
    built(out, "musl-gcc static-pie", |path| {
        let m = "/usr/lib/x86_64-linux-musl";
        let libgcc = Command::new("gcc")
            .arg("-print-libgcc-file-name")
            .output()
            .unwrap();
        let libgcc = String::from_utf8_lossy(&libgcc.stdout).trim().to_string();
        let mut c = Command::new("musl-gcc");
        c.args([
            "-fPIE",
            "-nostartfiles",
            "-nostdlib",
            "-Wl,-pie,-static,--no-dynamic-linker",
        ])
        .arg(format!("{m}/rcrt1.o"))
        .arg(format!("{m}/crti.o"))
        .arg(root().join("tests/apps-c").join(format!("{src}.c")))
        .args([
            "-Wl,--start-group".to_string(),
            format!("{m}/libc.a"),
            libgcc,
        ])
        .arg("-Wl,--end-group")
        .arg(format!("{m}/crtn.o"))
        .args(["-O2", "-o"])
        .arg(path);
        c
    })
}

/// `tests/apps-go` built with `go build` (static: CGO_ENABLED=0), once.
fn build_go() -> PathBuf {
    built("appsgo", "go build", |path| {
        let mut c = Command::new("go");
        c.args(["build", "-o"])
            .arg(path)
            .arg(".")
            .current_dir(root().join("tests/apps-go"))
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", work().join("gocache"))
            .env("GOPATH", work().join("gopath"));
        c
    })
}

/// The app's stdout lines, without the runtime's own (`unikernel: ...`,
/// the network banner a console-only platform prints there).
fn app_lines(o: &Outcome) -> Vec<&str> {
    o.stdout_lines()
        .into_iter()
        .filter(|l| !l.starts_with("unikernel:") && !l.starts_with("no network attached"))
        .collect()
}

/// `cargo unikernel pack` with `args`; the outcome.
fn pack(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("pack").args(args);
    run_with_deadline(cmd, b"", std::time::Duration::from_secs(600))
}

/// Pack `program` for `platform` into `out` with extra `args`; panics with
/// the builder's output if it fails.
fn pack_ok(program: &Path, platform: &str, out: &Path, args: &[&str]) -> Outcome {
    let mut all = vec![
        program.to_str().unwrap(),
        "--platform",
        platform,
        "-o",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let o = pack(&all);
    assert_eq!(o.code, 0, "pack failed: {}{}", o.stdout, o.stderr);
    o
}

const C_LINES: [&str; 5] = [
    "env GREETING=hello",
    "threads counted 4000",
    "malloc 32 MiB: ok",
    "slept 20 ms: ok",
    "",
];

fn check_c_run(o: &Outcome, argv: &str, code: i32) {
    let lines = o.stdout_lines();
    assert_eq!(
        lines.first().copied(),
        Some(argv),
        "stdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    for want in &C_LINES[..4] {
        assert!(
            lines.contains(want),
            "no {want:?} in stdout: {}\nstderr: {}",
            o.stdout,
            o.stderr
        );
    }
    assert!(
        o.stderr.contains("to stderr") || o.stdout.contains("to stderr"),
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, code, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
}

cases! {
    // A fixed-address executable (ET_EXEC at 0x400000) keeps its addresses:
    // arguments baked in by pack and replaced at run time, the environment,
    // pthreads, a 32 MiB malloc, sleeping, stderr and the exit code.
    fn packed_c_program_runs(t) on [hvt, kvm, xen] {
        if !musl_gcc("packed_c_program_runs") {
            return;
        }
        let prog = compile("hello", "hello-c", &["-static"]);
        let img = work().join(format!("hello-c.{}.img", t.platform()));
        pack_ok(&prog, t.platform(), &img, &["--env", "GREETING=hello", "--", "default", "7"]);
        let o = t.boot_image(&img, &[], &[], b"");
        check_c_run(&o, "argc 3: /hello-c default 7", 7);
        let o = t.boot_image(&img, &[], &["5"], b"");
        check_c_run(&o, "argc 2: /hello-c 5", 5);
    }

    // Go's runtime: raw system calls, goroutines on threads, timers, the
    // garbage collector (large PROT_NONE reservations: demand paging), a
    // goroutine spinning while main sleeps (preemption), os.Exit, and a
    // panic's exit code 2 with its trace, in the default memory.
    fn packed_go_program_runs(t) on [hvt, kvm, xen] {
        if !go_available("packed_go_program_runs") {
            return;
        }
        let prog = build_go();
        let img = work().join(format!("appsgo.{}.img", t.platform()));
        pack_ok(&prog, t.platform(), &img, &["--env", "GREETING=hi"]);
        let o = t.boot_image(&img, &[], &["a", "b"], b"");
        assert_eq!(
            app_lines(&o),
            [
                "args [a b] GREETING=hi",
                "goroutines sum 28",
                "gc cycles > 0: true live slices 16",
                "main ran beside a spinning goroutine",
            ],
            "stderr: {}",
            o.stderr
        );
        assert_eq!(o.code, 4, "stderr: {}", o.stderr);
        let o = t.boot_image(&img, &[], &["panic"], b"");
        assert_eq!(o.code, 2, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        let all = format!("{}{}", o.stdout, o.stderr);
        assert!(all.contains("panic: assignment to entry in nil map") && all.contains("goroutine 1 [running]"), "{all}");
    }

    // Go's net/http in the guest: a server on :8080 (dual-stack, as Go
    // listens by default) and net/http's client POSTing to it over
    // 127.0.0.1 and ::1 (netpoller: epoll, accept4, non-blocking connect),
    // then a graceful shutdown.
    fn go_net_http_over_loopback(t) on [hvt, kvm, xen] {
        if !go_available("go_net_http_over_loopback") {
            return;
        }
        let prog = build_go();
        let img = work().join(format!("appsgo-http.{}.img", t.platform()));
        pack_ok(&prog, t.platform(), &img, &[]);
        let o = t.boot_image(&img, &[], &["http-self"], b"");
        assert_eq!(
            app_lines(&o),
            [
                "self: 200 hello from go net/http, path /self, 12 bytes of body",
                "self: 200 hello from go net/http, path /self6, 12 bytes of body",
                "serving on [::]:8080",
                "shut down",
            ],
            "stderr: {}",
            o.stderr
        );
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    }

    // Mappings reused at one address after munmap: fresh zeros, nothing
    // of the old frames (a TLB flush skipped for an entry whose Accessed
    // bit read clear on kvm-pvm used to leave stale translations).
    fn remapped_memory_is_fresh(t) on [hvt, kvm] {
        if !musl_gcc("remapped_memory_is_fresh") {
            return;
        }
        let prog = compile("remap", "remap", &["-static"]);
        let img = work().join(format!("remap.{}.img", t.platform()));
        pack_ok(&prog, t.platform(), &img, &[]);
        let o = t.boot_image(&img, &[], &[], b"");
        assert_eq!(o.stdout, "bad 0\n", "stderr: {}", o.stderr);
        assert_eq!(o.code, 0);
    }

    // Memory as Linux gives it (tests/apps-c/lazy.c, 64 MiB guest): a
    // 4 GiB mapping costs nothing until touched, touched pages read zero
    // and keep what is stored (upwards and downwards), mlock and
    // MAP_POPULATE take frames at once and munmap gives them back, mremap
    // grows in place, moves without losing a byte, shrinks, and refuses
    // what Linux refuses.
    fn memory_is_given_on_first_touch(t) on [hvt, kvm, xen] {
        if !musl_gcc("memory_is_given_on_first_touch") {
            return;
        }
        let prog = compile("lazy", "lazy", &["-static"]);
        let img = work().join(format!("lazy.{}.img", t.platform()));
        pack_ok(&prog, t.platform(), &img, &["--mem", "64M"]);
        let o = t.boot_image(&img, &[], &[], b"");
        assert!(!o.stdout.contains("FAIL"), "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        for name in ["overcommit_4g", "untouched_is_free", "sequential_24m", "downward_8m", "mlock_populates", "mlock_too_much", "mremap_grow_in_place", "mremap_move_keeps_contents", "mremap_fixed", "mremap_shrink", "realloc_big"] {
            assert!(o.stdout.contains(&format!("ok {name}\n")), "{name} missing: {}", o.stdout);
        }
        assert!(o.stdout.ends_with("done 0 failures\n"), "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        assert_eq!(o.code, 0);
    }

    // `pack --message-format json`: stdout is one JSON line per message,
    // the image's ends with the components and why; text on stderr.
    fn pack_json_messages(t) on [hvt] {
        if !musl_gcc("pack_json_messages") {
            return;
        }
        let prog = compile("lazy", "lazy", &["-static"]);
        let img = work().join("lazy-json.img");
        let o = pack(&[prog.to_str().unwrap(), "-o", img.to_str().unwrap(), "--components", "net", "--message-format", "json"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        // The kernel build's cargo messages, then ours.
        let msgs: Vec<serde_json::Value> = o.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        let n = msgs.len();
        assert!(n >= 2, "{}", o.stdout);
        assert!(msgs[..n - 2].iter().all(|m| m["package_id"].is_string() || m["reason"] == "build-finished"), "{}", o.stdout);
        let img_msg = &msgs[n - 2];
        assert_eq!(img_msg["reason"], "unikernel-image");
        assert_eq!(img_msg["path"].as_str(), img.to_str());
        assert_eq!(img_msg["components"][0]["name"], "net");
        assert!(img_msg["components"][0]["reason"].as_str().unwrap().starts_with("listed in --components"), "{img_msg}");
        assert_eq!(msgs[n - 1], serde_json::json!({"reason": "unikernel-finished", "success": true}));
        assert!(o.stderr.contains("component net:"), "{}", o.stderr);
        let _ = t;
    }

    fn packed_static_pie_runs(t) on [hvt] {
        if !musl_gcc("packed_static_pie_runs") {
            return;
        }
        let prog = compile_static_pie("hello", "hello-c-pie");
        let img = work().join("hello-c-pie.img");
        pack_ok(&prog, "hvt", &img, &["--env", "GREETING=hello", "--name", "greeter"]);
        let o = t.boot_image(&img, &[], &["3"], b"");
        check_c_run(&o, "argc 2: /greeter 3", 3);
    }

    // Unikernel.toml beside the program gives the defaults; the command line
    // overrides them; an unknown key is refused with its name.
    fn unikernel_toml_gives_defaults(t) on [hvt] {
        if !musl_gcc("unikernel_toml_gives_defaults") {
            return;
        }
        let dir = work().join("with-config");
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("hello-c");
        std::fs::copy(compile("hello", "hello-c", &["-static"]), &prog).unwrap();
        std::fs::write(
            dir.join("Unikernel.toml"),
            "memory = \"48M\"\nargs = [\"from-toml\", \"9\"]\n[env]\nGREETING = \"hello\"\n",
        )
        .unwrap();
        let img = dir.join("hello-c.img");
        let o = pack(&[prog.to_str().unwrap()]);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        assert!(o.stdout.contains("hello-c.img"), "{}", o.stdout);
        let o = t.boot_image(&img, &[], &[], b"");
        check_c_run(&o, "argc 3: /hello-c from-toml 9", 9);
        let inspect = Command::new(tool("cargo-unikernel")).arg("inspect").arg(&img).output().unwrap();
        let report = String::from_utf8_lossy(&inspect.stdout);
        assert!(report.contains("48 MiB") || report.contains("50331648"), "{report}");
        // The command line wins over the file.
        let o = pack(&[prog.to_str().unwrap(), "--env", "GREETING=hello", "--", "cli", "4"]);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        check_c_run(&t.boot_image(&img, &[], &[], b""), "argc 3: /hello-c cli 4", 4);
        std::fs::write(dir.join("Unikernel.toml"), "memroy = \"48M\"\n").unwrap();
        let o = pack(&[prog.to_str().unwrap()]);
        assert_eq!(o.code, 1);
        assert!(
            o.stderr.contains("Unikernel.toml") && o.stderr.contains("unknown field `memroy`"),
            "{}",
            o.stderr
        );
    }

    // A stripped program: its symbols cannot choose components, pack warns;
    // --components names them and inspect says so.
    fn stripped_program_takes_components_from_the_command_line(t) on [hvt] {
        if !musl_gcc("stripped_program_takes_components_from_the_command_line") {
            return;
        }
        let prog = compile("hello", "hello-c-stripped", &["-static", "-s"]);
        let img = work().join("hello-c-stripped.img");
        let o = pack_ok(&prog, "hvt", &img, &[]);
        assert!(o.stderr.contains("no symbol table (stripped)") && o.stderr.contains("--components net"), "{}", o.stderr);
        let o = pack_ok(&prog, "hvt", &img, &["--components", "net"]);
        assert!(!o.stderr.contains("no symbol table"), "{}", o.stderr);
        let inspect = Command::new(tool("cargo-unikernel")).arg("inspect").arg(&img).output().unwrap();
        let report = String::from_utf8_lossy(&inspect.stdout);
        assert!(report.contains("listed in --components"), "{report}");
        let o = t.boot_image(&img, &["--env", "GREETING=hello"], &["0"], b"");
        assert!(o.stdout.contains("threads counted 4000"), "{}{}", o.stdout, o.stderr);
    }

    fn bad_programs_are_refused_with_one_line_each(t) on [hvt] {
        let _ = t;
        let d = work();
        let out = d.join("refused.img");
        let refuse = |file: &Path, want: &str| {
            let o = pack(&[file.to_str().unwrap(), "-o", out.to_str().unwrap()]);
            assert_eq!(o.code, 1, "{}: {}{}", file.display(), o.stdout, o.stderr);
            assert!(o.stderr.contains(want), "{}: wanted {want:?} in {}", file.display(), o.stderr);
        };
        let script = d.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        refuse(&script, "is a script (#!/bin/sh), not an executable");
        // A 64-bit header with another machine (aarch64), and a 32-bit one.
        let mut elf = vec![0u8; 128];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[16] = 2;
        elf[18] = 183;
        let arm = d.join("arm64-prog");
        std::fs::write(&arm, &elf).unwrap();
        refuse(&arm, "x86_64");
        elf[4] = 1;
        let i386 = d.join("i386-prog");
        std::fs::write(&i386, &elf).unwrap();
        refuse(&i386, "is a 32-bit ELF file");
        // A dynamic executable of the host names its interpreter.
        refuse(Path::new("/bin/true"), "is dynamically linked (its interpreter is /lib64/ld-linux-x86-64.so.2)");
        if !musl_gcc("bad_programs_are_refused_with_one_line_each (collision)") {
            return;
        }
        // Linked at 1 MiB, where the kernel is: both ranges named.
        let low = compile("hello", "hello-c-low", &["-static", "-Wl,-Ttext-segment=0x100000"]);
        refuse(&low, "is linked at 0x100000-");
        refuse(&low, "which collides with the kernel at 0x100000-");
    }
}

/// Go's net/http on hvt over a tap in a network namespace of the test's
/// own: curl from the host side gets the service's bytes (a GET and a
/// POST), a request for /quit shuts it down and the guest exits 0.
#[test]
fn go_net_http_answers_curl_on_a_tap() {
    use std::time::Duration;
    use unikernel_tests::netns::{have, NetNs, HOST_IP};
    let test = "go_net_http_answers_curl_on_a_tap";
    if !kvm_available(test) || !go_available(test) {
        return;
    }
    if !have("curl") {
        println!("SKIPPED {test}: curl is not installed");
        eprintln!("SKIPPED {test}: curl is not installed");
        return;
    }
    let Some(ns) = NetNs::new(test) else { return };
    let prog = build_go();
    let img = work().join("appsgo.tap.img");
    pack_ok(&prog, "hvt", &img, &[]);
    let g = ns.spawn_guest(
        &img,
        &["--ip", "10.0.3.2/24", "--gateway", HOST_IP],
        &["http"],
    );
    let o = ns.curl_until_up("http://10.0.3.2:8080/hello", Duration::from_secs(30));
    assert_eq!(
        o.stdout,
        "hello from go net/http, path /hello, 0 bytes of body\n",
        "curl: {} {}; guest: {} {}",
        o.stderr,
        o.code,
        g.stdout(),
        g.stderr()
    );
    let o = ns.client(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--data-binary",
            "0123456789",
            "http://10.0.3.2:8080/post",
        ],
        Duration::from_secs(15),
    );
    assert_eq!(
        o.stdout, "hello from go net/http, path /post, 10 bytes of body\n",
        "{}",
        o.stderr
    );
    let o = ns.client(
        "curl",
        &["-sS", "--max-time", "10", "http://10.0.3.2:8080/quit"],
        Duration::from_secs(15),
    );
    assert_eq!(o.stdout, "bye\n", "{}", o.stderr);
    let out = g.finish(Duration::from_secs(20));
    assert!(
        out.stdout.contains("serving on [::]:8080") && out.stdout.ends_with("shut down\n"),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
}
