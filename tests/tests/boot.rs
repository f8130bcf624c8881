//! Boot real images and check what the guest did: every case once, on the
//! targets it lists (see `unikernel_tests::cases!`). `hvt` is the bundled
//! monitor, `kvm` the kvm image under QEMU q35 (TCG), `microvm` the kvm
//! image under QEMU microvm, where the guest's stderr is mixed into stdout.
//!
//! Expected platform differences are in the target lists: stdin reaches the
//! app on hvt only (the kvm console has no input yet); the corrupted-image
//! messages are the hvt monitor's.

use unikernel_tests::*;

cases! {
    fn hello_min_prints_and_exits_zero(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("hello-min", &[], &[]);
        assert_eq!(o.stdout, "hello from hello-min\n", "stderr: {}", o.stderr);
        assert_eq!(o.code, 0);
    }

    // The 2 MiB target is hvt's; a kvm VM's firmware needs 4 MiB above the
    // image (the runner refuses less, as the next case checks).
    fn hello_min_runs_in_2m(t) on [hvt] {
        let o = t.boot("hello-min", &["--mem", "2M"], &[]);
        assert_eq!(o.stdout, "hello from hello-min\n", "stderr: {}", o.stderr);
        assert_eq!(o.code, 0);
    }

    fn kvm_refuses_memory_without_firmware_headroom(t) on [kvm] {
        let o = t.boot("hello-min", &["--mem", "2M"], &[]);
        assert_eq!(o.stdout, "");
        assert_eq!(o.code, 125, "stderr: {}", o.stderr);
        assert!(o.stderr.contains("VM firmware needs 4 MiB above"), "stderr: {}", o.stderr);
    }

    fn manifest_args_and_env_are_defaults(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("probe", &[], &[]);
        assert_eq!(
            o.stdout_lines(),
            [
                "argv: [\"/probe\", \"args\"]",
                "env PROBE_DEFAULT=from-metadata",
                "env PROBE_VAR=<unset>"
            ],
            "stderr: {}",
            o.stderr
        );
        assert_eq!(o.code, 0);
    }

    fn command_line_args_and_env_arrive(t) on [hvt, kvm, microvm] {
        let o = t.boot(
            "probe",
            &[
                "--env",
                "PROBE_VAR=hello world",
                "--env",
                "PROBE_DEFAULT=overridden",
            ],
            &["args", "alpha", "beta gamma"],
        );
        assert_eq!(
            o.stdout_lines(),
            [
                "argv: [\"/probe\", \"args\", \"alpha\", \"beta gamma\"]",
                "env PROBE_DEFAULT=overridden",
                "env PROBE_VAR=hello world"
            ],
            "stderr: {}",
            o.stderr
        );
    }

    /// The command-line format (docs/kvm.md) with every awkward value: the
    /// app must see exactly what was given, on every platform.
    fn awkward_args_and_env_arrive_intact(t) on [hvt, kvm, microvm] {
        let var = "a \"quoted\" \\back\\slash\\ = sign, ünïcødé, tab\there";
        let env = format!("PROBE_VAR={var}");
        let args = [
            "args",
            "",
            "--",
            "a b",
            "\"",
            "\\",
            "x=y",
            "PROBE_DEFAULT=not-env",
            "virtio_mmio.device=4K@0xd0000000:5",
            "日本語",
            " ",
        ];
        let o = t.boot("probe", &["--env", &env, "--env", "PROBE_DEFAULT="], &args);
        let argv: Vec<String> = std::iter::once("/probe".to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .collect();
        assert_eq!(
            o.stdout_lines(),
            [
                format!("argv: {argv:?}"),
                "env PROBE_DEFAULT=".to_string(),
                format!("env PROBE_VAR={var}"),
            ],
            "stderr: {}",
            o.stderr
        );
        assert_eq!(o.code, 0);
    }

    /// A bare `--` means "no arguments", not "the image's defaults".
    fn bare_dash_dash_clears_the_default_args(t) on [hvt, kvm, microvm] {
        let o = match t {
            Target::Hvt => {
                let mut cmd = std::process::Command::new(tool("unikernel-hvt"));
                cmd.arg(t.image("probe")).arg("--");
                run_with_deadline(cmd, b"", std::time::Duration::from_secs(60))
            }
            _ => {
                let machine = if t == Target::Kvm { "q35" } else { "microvm" };
                let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
                cmd.arg("run")
                    .arg(t.image("probe"))
                    .args(["--machine", machine, "--accel", accel(), "--timeout", "120", "--"]);
                run_with_deadline(cmd, b"", std::time::Duration::from_secs(150))
            }
        };
        assert_eq!(o.stdout_lines()[0], "argv: [\"/probe\"]", "stderr: {}", o.stderr);
        assert_eq!(o.code, 0);
    }

    fn exit_codes_propagate(t) on [hvt, kvm, microvm, xen] {
        for code in ["0", "3", "77", "255"] {
            let o = t.boot("probe", &[], &["exit", code]);
            assert_eq!(o.stdout, format!("exiting with {code}\n"));
            assert_eq!(o.code.to_string(), code, "stderr: {}", o.stderr);
        }
    }

    fn panic_prints_message_and_location_and_exits_101(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("probe", &[], &["panic"]);
        assert_eq!(o.code, 101, "stderr: {}", o.stderr);
        assert!(
            o.stderr.contains("panicked at probe/src/main.rs:"),
            "no location in stderr: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains("probe panicked on purpose: 42"),
            "stderr: {}",
            o.stderr
        );
    }

    fn null_deref_is_reported_with_address(t) on [hvt, kvm] {
        let o = t.boot("probe", &[], &["segv"]);
        assert_eq!(o.stdout, "about to read address 0\n");
        assert_eq!(o.code, 139, "SIGSEGV is 128+11; stderr: {}", o.stderr);
        assert!(
            o.stderr.contains("app killed by SIGSEGV"),
            "stderr: {}",
            o.stderr
        );
        assert!(
            o.stderr
                .contains("faulting address: 0x0 (read, page not mapped)"),
            "stderr: {}",
            o.stderr
        );
    }

    /// A fault's stack in source terms (docs/debugging.md): hvt through the
    /// halt call's crash record (`cargo unikernel run`), kvm through the
    /// crash line on the console, Xen (and a saved hvt console) through
    /// `cargo unikernel symbolize IMAGE < log`. The app's own frames come
    /// innermost first, with their file and line.
    fn crash_report_names_the_apps_functions_and_lines(t) on [hvt, kvm, xen] {
        let image = t.image("probe");
        let mut reports = Vec::new();
        if t == Target::Hvt {
            let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
            cmd.arg("run").arg(&image).args(["--", "crash"]);
            let o = run_with_deadline(cmd, b"", std::time::Duration::from_secs(60));
            assert_eq!(o.code, 139, "stderr: {}", o.stderr);
            reports.push(("cargo unikernel run", o.stderr));
        }
        let o = t.boot("probe", &[], &["crash"]);
        assert_eq!(o.code, 139, "stderr: {}", o.stderr);
        assert!(o.stderr.contains("unikernel-crash v1 fault app=0x"), "stderr: {}", o.stderr);
        if t == Target::Kvm {
            reports.push(("cargo unikernel run", o.stderr.clone()));
        }
        if t != Target::Kvm {
            // The console as a log file would hold it.
            let log = if t == Target::Xen { &o.stdout } else { &o.stderr };
            let s = symbolize(&image, log.as_bytes());
            assert_eq!(s.code, 0, "stderr: {}", s.stderr);
            assert!(s.stdout.starts_with(log.lines().next().unwrap_or("")), "{}", s.stdout);
            reports.push(("cargo unikernel symbolize", s.stdout));
        }
        for (how, report) in reports {
            let mut at = report.find("crash report (fault; symbols from").unwrap_or_else(|| panic!("{how}: no report in {report}"));
            for frame in [
                "probe::crash_inner at probe/src/main.rs:",
                "probe::crash_middle at probe/src/main.rs:",
                "probe::crash_outer at probe/src/main.rs:",
                "probe::main at probe/src/main.rs:",
            ] {
                let Some(i) = report[at..].find(frame) else {
                    panic!("{how}: no {frame:?} after byte {at} of the report:\n{report}");
                };
                at += i;
            }
        }
    }

    /// A panic of the runtime itself (`UNIKERNEL_PANIC=1` asks for one at
    /// boot): exit 253, the crash line, and the report names the kernel's
    /// functions innermost first (hvt: the halt call's crash record through
    /// `cargo unikernel run`; kvm: the console's crash line; Xen: a saved
    /// console through `cargo unikernel symbolize`).
    fn runtime_panic_is_reported_in_the_kernels_terms(t) on [hvt, kvm, xen] {
        let image = t.image("probe");
        let opts = ["--env", "UNIKERNEL_PANIC=1"];
        let o = if t == Target::Hvt {
            let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
            cmd.arg("run").arg(&image).args(opts).args(["--", "args"]);
            run_with_deadline(cmd, b"", std::time::Duration::from_secs(60))
        } else {
            t.boot("probe", &opts, &["args"])
        };
        assert_eq!(o.code, 253, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        let console = if t == Target::Xen { &o.stdout } else { &o.stderr };
        assert!(console.contains("UNIKERNEL_PANIC=1: a runtime panic asked for"), "{console}");
        assert!(console.contains("unikernel-crash v1 panic"), "{console}");
        assert!(!o.stdout.contains("argv:"), "the app must not have run: {}", o.stdout);
        let report = if t == Target::Xen {
            let s = symbolize(&image, console.as_bytes());
            assert_eq!(s.code, 0, "stderr: {}", s.stderr);
            s.stdout
        } else {
            o.stderr.clone()
        };
        let mut at = report
            .find("crash report (panic; symbols from")
            .unwrap_or_else(|| panic!("no report in {report}"));
        for frame in ["unikernel_runtime::panic_on_request at ", "unikernel_runtime::start at "] {
            let Some(i) = report[at..].find(frame) else {
                panic!("no {frame:?} after byte {at} of the report:\n{report}");
            };
            at += i;
            assert!(report[at..].lines().next().unwrap().ends_with("[kernel]"), "{report}");
        }
    }

    /// std's backtrace of an app's panic in source terms: the runtime hands
    /// the app `RUST_BACKTRACE=full` for any backtrace asked for (std's
    /// short form names frames itself, which it cannot in a unikernel), and
    /// the host names the printed addresses: hvt and kvm in `cargo
    /// unikernel run`, Xen through `cargo unikernel symbolize`.
    fn panic_backtrace_names_the_apps_frames(t) on [hvt, kvm, xen] {
        let image = t.image("probe");
        let log = if t == Target::Hvt {
            let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
            cmd.arg("run").arg(&image).args(["--env", "RUST_BACKTRACE=1", "--", "panic"]);
            run_with_deadline(cmd, b"", std::time::Duration::from_secs(60))
        } else {
            t.boot("probe", &["--env", "RUST_BACKTRACE=1"], &["panic"])
        };
        assert_eq!(log.code, 101, "stderr: {}", log.stderr);
        let console = if t == Target::Xen { &log.stdout } else { &log.stderr };
        assert!(console.contains("stack backtrace:\n   0: "), "console: {console}");
        let report = if t == Target::Xen {
            let s = symbolize(&image, console.as_bytes());
            assert_eq!(s.code, 0, "stderr: {}", s.stderr);
            s.stdout
        } else {
            log.stderr.clone()
        };
        let at = report
            .find("panic backtrace (RUST_BACKTRACE; symbols from")
            .unwrap_or_else(|| panic!("no report in {report}"));
        let mut at = at;
        for frame in [
            "std::panicking::panic_with_hook at ",
            "core::panicking::panic_fmt at ",
            "probe::main at probe/src/main.rs:",
            "std::rt::lang_start_internal at ",
        ] {
            let Some(i) = report[at..].find(frame) else {
                panic!("no {frame:?} after byte {at} of the report:\n{report}");
            };
            at += i;
        }
    }

    /// gdb on a running guest (docs/debugging.md): `cargo unikernel run
    /// --gdb` waits for it and prints the command that loads the symbols
    /// where the guest runs them; gdb stops at a breakpoint in the app,
    /// walks its stack, single-steps and kills it. hvt serves gdb itself
    /// (breakpoints and steps trapped by the runtime), and also reports the
    /// app's fault as SIGSEGV; kvm is QEMU's gdbstub.
    fn gdb_breaks_steps_and_walks_the_apps_stack(t) on [hvt, kvm] {
        let image = t.image("probe");
        // hvt names the port it got for port 0; QEMU needs a free one.
        let addr = if t == Target::Hvt {
            "127.0.0.1:0".to_string()
        } else {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mut run = std::process::Command::new(tool("cargo-unikernel"));
        run.arg("run").arg(format!("--gdb={addr}")).arg(&image).args(["--", "crash"]);
        let mut guest = run
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = guest.stderr.take().unwrap();
        let relay = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok) {
                let _ = tx.send(line.clone());
                all += &line;
                all.push('\n');
            }
            all
        });
        let command = loop {
            match rx.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(l) if l.trim_start().starts_with("gdb -q") => break l,
                Ok(_) => {}
                Err(e) => {
                    let _ = guest.kill();
                    panic!("no gdb command line from cargo unikernel run ({e}): {}", relay.join().unwrap());
                }
            }
        };
        // The printed `-ex '...'` commands, then ours.
        let mut gdb = std::process::Command::new("gdb");
        gdb.args(["-q", "-batch", "-nx", "-ex", "set pagination off"]);
        for part in command.split("-ex '").skip(1) {
            gdb.args(["-ex", part.split('\'').next().unwrap()]);
        }
        let bp = if t == Target::Hvt { "break" } else { "hbreak" };
        for c in [
            &format!("{bp} probe::crash_inner"),
            "continue",
            "bt",
            "info registers rip",
            "stepi",
            "info registers rip",
        ] {
            gdb.args(["-ex", c]);
        }
        if t == Target::Hvt {
            gdb.args(["-ex", "continue"]);
        }
        gdb.args(["-ex", "kill"]);
        let o = run_with_deadline(gdb, b"", std::time::Duration::from_secs(300));
        let _ = guest.kill();
        let _ = guest.wait();
        let monitor = relay.join().unwrap();
        let out = format!("{}{}", o.stdout, o.stderr);
        let mut at = out
            .find("Breakpoint 1, probe::crash_inner () at probe/src/main.rs:")
            .unwrap_or_else(|| panic!("gdb did not stop at the breakpoint:\n{out}\nrun:\n{monitor}"));
        for frame in ["in probe::crash_middle ()", "in probe::crash_outer ()", "in probe::main ()"] {
            at += out[at..].find(frame).unwrap_or_else(|| panic!("no {frame:?} in the backtrace:\n{out}"));
        }
        let rips: Vec<u64> = out
            .lines()
            .filter_map(|l| l.strip_prefix("rip"))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .collect();
        assert_eq!(rips.len(), 2, "two rip lines expected:\n{out}");
        assert!(rips[1] > rips[0] && rips[1] < rips[0] + 16, "stepi did not step one instruction: {rips:x?}\n{out}");
        if t == Target::Hvt {
            assert!(out.contains("Program received signal SIGSEGV"), "{out}");
            assert!(monitor.contains("unikernel-hvt: killed by gdb"), "{monitor}");
        }
    }

    /// `cargo unikernel run` runs the hvt monitor as a child process under
    /// its seccomp filter (docs/security.md): the child shows `Seccomp: 2`
    /// while the guest runs, and a child killed by SIGSYS is reported in
    /// one line with 128 + 31.
    fn cargo_run_puts_the_monitor_under_seccomp(t) on [hvt] {
        let image = t.image("probe");
        let mut run = std::process::Command::new(tool("cargo-unikernel"));
        let mut child = run
            .arg("run")
            .arg(&image)
            .args(["--", "sleep"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let start = std::time::Instant::now();
        let mut mode = String::new();
        let mut monitor = 0;
        while start.elapsed() < std::time::Duration::from_secs(30) && mode != "2" {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let Some(pid) = std::fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()))
            else {
                continue;
            };
            monitor = pid;
            mode = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .unwrap_or("")
                .trim()
                .to_string();
        }
        if mode == "2" {
            let k = std::process::Command::new("kill")
                .args(["-SYS", &monitor.to_string()])
                .status()
                .unwrap();
            assert!(k.success());
        } else {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(mode, "2", "the monitor child's Seccomp mode; stderr: {err}");
        assert_eq!(out.status.code(), Some(159), "stderr: {err}");
        assert!(err.contains("the monitor was killed by signal 31 (a host call outside its seccomp filter"), "{err}");
    }

    /// gdb's Ctrl-C (the byte 0x03 of the remote protocol) stops a guest
    /// that spins without a system call or a timer of its own: the monitor
    /// kicks the vCPU with a tick, the runtime stops there. Spoken raw (gdb
    /// in batch mode cannot interrupt); the stop's rip, symbolized with the
    /// image's debug files, is in the spinning function.
    fn gdb_ctrl_c_stops_a_spinning_app(t) on [hvt] {
        let image = t.image("probe");
        let mut cmd = std::process::Command::new(tool("unikernel-hvt"));
        cmd.args(["--gdb", "127.0.0.1:0"]).arg(&image).args(["--", "spin"]);
        let mut guest = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(guest.stderr.take().unwrap());
        let mut port = None;
        let mut seen = String::new();
        while port.is_none() {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) == 0 {
                break;
            }
            seen += &line;
            port = line
                .split("waiting for gdb on 127.0.0.1:")
                .nth(1)
                .and_then(|r| r.split(';').next())
                .and_then(|p| p.parse::<u16>().ok());
        }
        let port = port.unwrap_or_else(|| panic!("no gdb port in: {seen}"));
        // The gdb command line follows.
        std::io::BufRead::read_line(&mut err, &mut seen).unwrap();
        let mut rsp = Rsp::connect(port);
        let first = rsp.ask("?");
        assert!(first.starts_with("T05") || first.starts_with("S05"), "{first}");
        rsp.send("c");
        std::thread::sleep(std::time::Duration::from_secs(1));
        let stop = rsp.interrupt();
        assert!(stop.starts_with("S02") || stop.starts_with("T02"), "Ctrl-C gave {stop:?}");
        let regs = rsp.ask("g");
        // rip is register 16: 8 little-endian bytes after 16 of 8.
        let rip = u64::from_str_radix(regs.get(256..272).unwrap_or_else(|| panic!("short g reply {regs}")), 16)
            .map(u64::swap_bytes)
            .unwrap();
        let base = seen
            .split(" -o ")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .and_then(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("no app offset in {seen}"));
        rsp.send("k");
        let code = guest.wait().unwrap().code();
        assert_eq!(code, Some(137), "killed by gdb is 137");
        let line = format!("unikernel-crash v1 fault app={base:#x} {rip:#x}\n");
        let s = symbolize(&image, line.as_bytes());
        assert!(s.stdout.contains("probe::spin_forever"), "rip {rip:#x} is not in spin_forever:\n{}", s.stdout);
    }

    /// The same report where the console mixes stdout and stderr.
    fn null_deref_is_reported_on_a_mixed_console(t) on [microvm, xen] {
        let o = t.boot("probe", &[], &["segv"]);
        assert!(o.stdout.starts_with("about to read address 0\n"), "stdout: {}", o.stdout);
        assert!(o.stdout.contains("app killed by SIGSEGV"), "stdout: {}", o.stdout);
        assert!(
            o.stdout.contains("faulting address: 0x0 (read, page not mapped)"),
            "stdout: {}",
            o.stdout
        );
        assert_eq!(o.code, 139, "SIGSEGV is 128+11; stderr: {}", o.stderr);
    }

    fn guard_page_faults(t) on [hvt, kvm] {
        let o = t.boot("probe", &[], &["guard"]);
        let lines = o.stdout_lines();
        assert_eq!(
            lines[0], "after mprotect round trip: 7 9",
            "stderr: {}",
            o.stderr
        );
        assert!(lines[1].starts_with("touching guard page at 0x"));
        assert_eq!(lines.len(), 2, "the guard page write must not succeed");
        assert_eq!(o.code, 139, "stderr: {}", o.stderr);
        let addr = lines[1].trim_start_matches("touching guard page at ");
        assert!(
            o.stderr.contains(&format!(
                "faulting address: {addr} (write, protection violation)"
            )) || o.stderr.contains(&format!(
                "faulting address: {addr} (write, page not mapped)"
            )),
            "stderr: {}",
            o.stderr
        );
    }

    /// W^X on every image page (docs/xen.md, "Memory"): the app's code
    /// is not writable, its data not executable, as on Linux: SIGSEGV.
    fn writing_the_apps_code_is_sigsegv(t) on [hvt, kvm, xen] {
        let o = t.boot("probe", &[], &["write-code"]);
        let line = o.stdout_lines().first().copied().unwrap_or_default().to_string();
        assert!(line.starts_with("writing to app code at 0x"), "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        assert!(!o.stdout.contains("should not happen"), "the write went through: {}", o.stdout);
        let addr = line.trim_start_matches("writing to app code at ");
        assert_sigsegv(&o, addr, "write");
    }

    fn executing_the_apps_data_is_sigsegv(t) on [hvt, kvm, xen] {
        for (mode, what) in [("exec-data", "data"), ("exec-heap", "heap")] {
            let o = t.boot("probe", &[], &[mode]);
            let line = o.stdout_lines().first().copied().unwrap_or_default().to_string();
            let prefix = format!("calling {what} at 0x");
            assert!(
                line.starts_with(&prefix) && line.ends_with("(byte 0xc3)"),
                "{mode}: stdout: {}\nstderr: {}",
                o.stdout,
                o.stderr
            );
            assert!(!o.stdout.contains("should not happen"), "{mode}: the call returned: {}", o.stdout);
            let addr = line[prefix.len() - 2..].split(' ').next().unwrap_or_default();
            assert_sigsegv(&o, addr, "execute");
        }
    }

    /// The runtime's code is in the app's address space (one address
    /// space, docs/architecture.md) but read-only: the store faults. The
    /// address is the kernel's ELF entry point, in its text segment.
    fn writing_the_kernels_code_is_sigsegv(t) on [hvt, kvm, xen] {
        let image = t.image("probe");
        let entry = elf_entry(&image);
        let arg = format!("{entry:#x}");
        let o = t.boot_image(&image, &[], &["write-kernel", &arg], b"");
        assert_eq!(
            o.stdout_lines().first().copied().unwrap_or_default(),
            format!("writing to kernel code at {arg}"),
            "stdout: {}\nstderr: {}",
            o.stdout,
            o.stderr
        );
        assert!(!o.stdout.contains("should not happen"), "the write went through: {}", o.stdout);
        assert_sigsegv(&o, &arg, "write");
    }

    fn abort_ends_with_sigabrt(t) on [hvt, kvm, xen] {
        let o = t.boot("probe", &[], &["abort"]);
        // Xen: one console ring, so the runtime's report follows in stdout.
        let expected = match t {
            Target::Xen => "aborting\nunikernel: app killed by SIGABRT\n",
            _ => "aborting\n",
        };
        assert_eq!(o.stdout, expected);
        assert_eq!(o.code, 134, "stderr: {}", o.stderr);
        assert!(o.stderr.contains("SIGABRT"), "stderr: {}", o.stderr);
    }

    fn unknown_syscall_returns_enosys(t) on [hvt, kvm, xen] {
        let o = t.boot("probe", &[], &["enosys"]);
        assert_eq!(
            o.stdout_lines(),
            ["syscall 1000 returned -1, errno 38", "still alive"]
        );
        assert_eq!(o.code, 0);
    }

    fn bad_pointer_gives_efault(t) on [hvt, kvm] {
        let o = t.boot("probe", &[], &["efault"]);
        assert_eq!(
            o.stdout_lines(),
            ["write from a bad pointer returned -1, errno 14"]
        );
        assert_eq!(o.code, 0);
    }

    fn files_and_devices(t) on [hvt, kvm] {
        let o = t.boot("probe", &[], &["fs"]);
        assert_eq!(
            o.stdout_lines(),
            [
                "write /dev/null: 10",
                "/dev/zero all zero: true",
                "/dev/urandom nonzero: true",
                "open /nonexistent/file: NotFound",
                "/ is dir: true",
                "/dev: null random urandom zero",
                "current_exe: /probe",
                "cwd: /",
            ],
            "stderr: {}",
            o.stderr
        );
        assert_eq!(o.code, 0);
    }

    fn memory_heavy_work(t) on [hvt, kvm] {
        let o = t.boot("probe", &[], &["mem"]);
        assert_eq!(
            o.stdout_lines(),
            [
                "16 MiB vector sum: 2097144125",
                "kept 1333 blocks, 3318554 bytes",
                "hashmap 999 -> 998001"
            ],
            "stderr: {}",
            o.stderr
        );
        assert_eq!(o.code, 0);
    }

    fn sleeping_and_clocks(t) on [hvt, kvm, xen] {
        let o = t.boot("probe", &[], &["time"]);
        assert_eq!(
            o.stdout_lines(),
            [
                "slept 20 ms: at least 20 ms: true, under 500 ms: true",
                "wall clock after 2024: true"
            ],
            "stderr: {}",
            o.stderr
        );
    }

    // Every image has a vDSO; its clocks agree with the system calls'. Where
    // the vDSO can read the clock itself (hvt and kvm under TCG: the TSC;
    // kvm under KVM: kvmclock; Xen: the pvclock in the shared-info page,
    // while the hypervisor marks it stable: the Xen lab's nested Xen does
    // not, so there every read falls back to the system call),
    // musl's clock_gettime never enters the kernel: the trace shows only
    // the probe's 4 raw system calls, not its 2,002 libc calls.
    fn vdso_clocks_agree_with_system_calls(t) on [hvt, kvm, xen] {
        let o = t.boot("probe", &["--trace-syscalls"], &["vdso"]);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
        // A console-only platform carries the trace and stderr on stdout.
        let app: Vec<&str> = o
            .stdout_lines()
            .into_iter()
            .filter(|l| !l.starts_with("[trace]") && !l.starts_with("vdso clock:") && !l.starts_with("unikernel:"))
            .collect();
        assert_eq!(
            app,
            [
                "vdso: present",
                "monotonic: 1000 reads in order: true, between the system calls: true, valid: true",
                "realtime: 1000 reads in order: true, between the system calls: true, valid: true",
                "gettimeofday and time agree: true",
                "monotonic across threads and preemptions: true",
            ],
            "stderr: {}",
            o.stderr
        );
        let all = format!("{}{}", o.stdout, o.stderr);
        let clock = all
            .lines()
            .find_map(|l| l.strip_prefix("vdso clock: "))
            .unwrap_or_else(|| panic!("no vdso clock line: {all}"));
        match t {
            Target::Xen => assert!(clock.starts_with("pvclock"), "{clock}"),
            // Under KVM (UNIKERNEL_TESTS_ACCEL=kvm) QEMU gives kvmclock.
            Target::Kvm if accel() == "kvm" => assert_eq!(clock, "pvclock, stable: true"),
            _ => assert_eq!(clock, "tsc"),
        }
        let calls = all.matches("[trace] clock_gettime(").count();
        println!("vdso clock on {t:?}: {clock}; {calls} clock_gettime system calls");
        if clock == "pvclock, stable: false" {
            assert!(calls > 4, "an unstable pvclock must fall back: {calls} calls");
        } else {
            assert_eq!(calls, 4, "clock_gettime system calls: {all}");
        }
    }

    // The builder links a shim in place of musl's hot wrappers (read,
    // writev, recv, epoll_wait, pread, poll, mmap, close, syscall, ...;
    // builder/app-shim/syscall.rs).
    // hvt names its system-call gateway in AT_SYSINFO and the shim enters
    // the runtime through it with a jump; kvm and Xen name none, and the
    // shim runs `syscall`. Either way the results and errno are musl's, and
    // the runtime sees each call (both getppid calls are traced).
    fn wrapped_calls_take_the_gateway_where_there_is_one(t) on [hvt, kvm, xen] {
        let o = t.boot("probe", &["--trace-syscalls"], &["gateway"]);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
        let app: Vec<&str> = o
            .stdout_lines()
            .into_iter()
            .filter(|l| !l.starts_with("[trace]") && !l.starts_with("unikernel:"))
            .collect();
        let gateway = if t == Target::Hvt { "present" } else { "absent" };
        // Every expected line, in any order: in the Xen lab the console
        // can carry a boot's output twice (seen once in CI).
        let first = format!("AT_SYSINFO: {gateway}");
        let want = [
                first.as_str(),
                "getppid the same both ways: true",
                "read(-1): -1 errno EBADF: true",
                "writev 8, epoll_wait 1 (data 7), readv 8: gateway!",
                "send 4, recv 4: ping",
                "futex wait on a changed word: -1 errno EAGAIN: true",
                "pwrite 5, lseek 2, pread 3: ell, fsync 0, fdatasync 0",
                "poll 1 (POLLIN: true), sched_yield 0",
                "mmap fixed true, fresh page zero true, offset EINVAL true, length ENOMEM true, munmap 0",
                "aio_cancel AIO_ALLDONE true, shutdown 0, then recv 1 and 0, close 0, again -1 errno EBADF: true",
            ];
        for line in want {
            assert!(app.contains(&line), "missing {line:?}: {app:?}\nstderr: {}", o.stderr);
        }
        assert_eq!(app.len() % want.len(), 0, "unexpected lines: {app:?}");
        let all = format!("{}{}", o.stdout, o.stderr);
        let traced = all.matches("[trace] getppid(").count();
        assert!(traced >= 2 && traced % 2 == 0, "{all}");
    }

    fn stdin_reaches_the_app(t) on [hvt] {
        let o = t.boot_with_input("probe", &[], &["stdin"], b"piped input\n");
        assert_eq!(
            o.stdout, "stdin had 12 bytes: PIPED INPUT\n",
            "stderr: {}",
            o.stderr
        );
    }

    fn trace_syscalls_prints_calls(t) on [hvt, kvm] {
        let o = t.boot("probe", &["--trace-syscalls"], &["enosys"]);
        assert_eq!(o.code, 0);
        assert!(
            o.stderr.contains("[trace] write(1, "),
            "stderr: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains("[trace] syscall_1000(1, 2, 3"),
            "stderr: {}",
            o.stderr
        );
        assert!(o.stderr.contains("= -1 ENOSYS"), "stderr: {}", o.stderr);
        assert!(
            o.stderr.contains("[trace] exit_group(0)"),
            "stderr: {}",
            o.stderr
        );
        // The summary of unimplemented calls at exit counts it.
        assert!(
            o.stderr.contains("[trace]   ? (1000): 1 time(s)"),
            "stderr: {}",
            o.stderr
        );
    }

    fn too_little_memory_is_a_clear_error(t) on [hvt, kvm] {
        let o = t.boot("probe", &["--mem", "1M"], &[]);
        assert_ne!(o.code, 0);
        assert!(o.stdout.is_empty());
        assert!(
            o.stderr.contains("--mem") || o.stderr.contains("memory"),
            "stderr: {}",
            o.stderr
        );
        assert!(
            !o.stderr.contains("panicked"),
            "the monitor panicked: {}",
            o.stderr
        );
    }

    /// Even marked executable, the host kernel refuses an image: its
    /// PT_INTERP names an interpreter that does not exist (as Solo5 does).
    fn image_is_not_executable_by_the_host(t) on [hvt, kvm] {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::temp_dir().join(format!(
            "unikernel-exec-{}-{}",
            std::process::id(),
            t.platform()
        ));
        std::fs::copy(t.image("hello-min"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = std::process::Command::new(&exe).output();
        let _ = std::fs::remove_file(&exe);
        match r {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
            Ok(o) => panic!("the host ran the image: {o:?}"),
        }
    }
}

fn corrupt_case(name: &str, bytes: &[u8]) -> Outcome {
    let p = std::env::temp_dir().join(format!("unikernel-corrupt-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    let o = boot(&p, &[], &[]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(o.code, 125, "{name}: stderr: {}", o.stderr);
    assert!(
        !o.stderr.contains("panicked"),
        "{name}: the monitor panicked: {}",
        o.stderr
    );
    assert_eq!(
        o.stderr.lines().count(),
        1,
        "{name}: want one line: {}",
        o.stderr
    );
    o
}

/// The hvt monitor's own checks (exit 125, one line); hvt only.
#[test]
fn corrupted_images_are_clear_errors() {
    let img = std::fs::read(image("hello-min")).unwrap();
    let o = corrupt_case("truncated", &img[..img.len() / 3]);
    assert!(o.stderr.contains("unikernel-hvt"), "{}", o.stderr);
    let mut bad = img.clone();
    bad[..4].copy_from_slice(b"\x7fELG");
    corrupt_case("magic", &bad);
    corrupt_case("empty", b"");
    let o = corrupt_case("dynamic", &std::fs::read("/bin/true").unwrap());
    assert!(o.stderr.contains("not a unikernel image"), "{}", o.stderr);
}

cases! {

    /// An image without its Xen notes: xl refuses it with its own message
    /// (the lab's 125). The wrong-magic boot is tests/xen/smoke.sh's.
    fn xen_image_without_notes_is_refused_by_xl(t) on [xen] {
        let mut data = std::fs::read(t.image("hello-min")).unwrap();
        let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes(data[56..58].try_into().unwrap()) as usize;
        let mut removed = 0;
        for i in 0..phnum {
            let at = phoff + i * 56;
            if data[at..at + 4] == 4u32.to_le_bytes() {
                data[at..at + 4].copy_from_slice(&0u32.to_le_bytes()); // PT_NULL
                removed += 1;
            }
        }
        assert_eq!(removed, 1, "a xen image has exactly one PT_NOTE (the kernel's)");
        let path = std::env::temp_dir().join(format!("unikernel-test-{}-xen-nonotes", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        let o = t.boot_image(&path, &[], &[], b"");
        let _ = std::fs::remove_file(&path);
        assert_eq!(o.code, 125, "stderr: {}", o.stderr);
        assert!(o.stderr.contains("no loader found"), "stderr: {}", o.stderr);
        assert_eq!(o.stdout, "");
    }
}

// The component frame and the runtime options. `net-probe` links std's TCP
// code, so the builder chooses the net component; its
// `[package.metadata.unikernel.net]` table becomes the manifest's option
// defaults, which reach the runtime (printed with UNIKERNEL_VERBOSE=1).
// On xen the console is mixed: the app's lines are looked for among the
// runtime's.
cases! {
    fn components_and_their_reasons_are_in_the_image(t) on [hvt, kvm, xen] {
        let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
        cmd.arg("inspect").arg(t.image("net-probe"));
        let o = run_with_deadline(cmd, b"", std::time::Duration::from_secs(60));
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
        let net = o
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("net: "))
            .unwrap_or_else(|| panic!("no net component in:\n{}", o.stdout));
        // TcpListener::bind: socket, bind, listen; its address lookup:
        // connect (musl's resolver) and getaddrinfo. No accept: it never
        // accepts.
        assert!(
            net.ends_with("net: the app calls socket, connect, bind, listen, getaddrinfo"),
            "{net}"
        );
        assert!(o.stdout.contains("  devices     \"net\"\n"), "{}", o.stdout);
        assert!(
            o.stdout.contains("  ports       \"8080:8080\" \"udp:5353:53\"\n"),
            "{}",
            o.stdout
        );
        // A plain std app gets no component.
        let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
        cmd.arg("inspect").arg(t.image("hello-min"));
        let o = run_with_deadline(cmd, b"", std::time::Duration::from_secs(60));
        assert!(o.stdout.contains("  components  (none)\n"), "{}", o.stdout);
    }

    fn manifest_options_reach_the_runtime(t) on [hvt, kvm, xen] {
        let o = t.boot("net-probe", &["--env", "UNIKERNEL_VERBOSE=1"], &[]);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
        // Options are the runtime's: the app's environment has none of them.
        assert_app_saw_no_options(&o);
        assert!(
            o.stderr.contains(
                "[unikernel] options: UNIKERNEL_IP=10.0.0.2/24 UNIKERNEL_GATEWAY=10.0.0.1 UNIKERNEL_DNS=10.0.0.1,9.9.9.9 UNIKERNEL_VERBOSE=1\n"
            ),
            "stderr: {}",
            o.stderr
        );
        // Without UNIKERNEL_VERBOSE the runtime prints nothing of it.
        let o = t.boot("net-probe", &[], &[]);
        assert!(!o.stderr.contains("[unikernel] options"), "stderr: {}", o.stderr);
    }

    fn command_line_options_override_the_manifest_by_key(t) on [hvt, kvm, xen] {
        let o = t.boot(
            "net-probe",
            &["--env", "UNIKERNEL_IP=10.1.2.3/16", "--env", "UNIKERNEL_VERBOSE=1", "--env", "APP_VAR=x"],
            &[],
        );
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
        assert!(
            o.stderr.contains(
                "[unikernel] options: UNIKERNEL_IP=10.1.2.3/16 UNIKERNEL_GATEWAY=10.0.0.1 UNIKERNEL_DNS=10.0.0.1,9.9.9.9 UNIKERNEL_VERBOSE=1\n"
            ),
            "stderr: {}",
            o.stderr
        );
        assert_app_saw_no_options(&o);
    }
}

/// `net-probe` ran and printed no `env UNIKERNEL_*` line.
/// The app died of a protection fault at `addr` (`what`: read, write,
/// execute): the runtime's report (stderr; on a mixed console, where
/// `Outcome::stderr` holds the console too) and 128 + SIGSEGV.
fn assert_sigsegv(o: &Outcome, addr: &str, what: &str) {
    assert!(
        o.stderr.contains("app killed by SIGSEGV"),
        "stderr: {}",
        o.stderr
    );
    assert!(
        o.stderr.contains(&format!(
            "faulting address: {addr} ({what}, protection violation)"
        )),
        "no {what} fault at {addr} in stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, 139, "SIGSEGV is 128+11; stderr: {}", o.stderr);
}

/// The ELF entry point of an image (the kernel's: `_start`, `hvt_entry`,
/// `kvm_pvh_entry`, each in the kernel's text segment).
fn elf_entry(image: &std::path::Path) -> u64 {
    let bytes = std::fs::read(image).expect("read the image");
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        image.display()
    );
    u64::from_le_bytes(bytes[24..32].try_into().unwrap())
}

fn assert_app_saw_no_options(o: &Outcome) {
    let lines = o.stdout_lines();
    assert!(
        lines.contains(&"net-probe up"),
        "stdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("env UNIKERNEL_")),
        "stdout: {}",
        o.stdout
    );
}

/// SIGTERM stops a running guest cleanly: the monitor leaves the run loop,
/// ends its devices (their stats print then) and exits with 143.
#[test]
fn sigterm_stops_the_monitor_cleanly() {
    if !kvm_available("sigterm_stops_the_monitor_cleanly") {
        return;
    }
    let mut cmd = std::process::Command::new(tool("unikernel-hvt"));
    cmd.arg(image("probe")).args(["--", "sleep"]);
    let mut g = unikernel_tests::netns::Guest::spawn(cmd);
    assert!(
        g.wait_for("sleeping", std::time::Duration::from_secs(30)),
        "{}",
        g.stderr()
    );
    g.signal("TERM");
    let o = g.finish(std::time::Duration::from_secs(10));
    assert_eq!(o.code, 143, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("unikernel-hvt: stopped by SIGTERM (exit 143)"),
        "{}",
        o.stderr
    );
    assert!(!o.stdout.contains("woke up"), "{}", o.stdout);
}

/// `cargo unikernel symbolize IMAGE` on the console log `log`.
fn symbolize(image: &std::path::Path, log: &[u8]) -> Outcome {
    let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
    cmd.arg("symbolize").arg(image);
    run_with_deadline(cmd, log, std::time::Duration::from_secs(60))
}

/// A client of the GDB remote protocol, just enough for a Ctrl-C.
struct Rsp {
    s: std::net::TcpStream,
}

impl Rsp {
    fn connect(port: u16) -> Rsp {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        Rsp { s }
    }

    fn send(&mut self, body: &str) {
        use std::io::Write;
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        write!(self.s, "${body}#{sum:02x}").unwrap();
    }

    /// The next packet's body (acks skipped; acknowledged).
    fn reply(&mut self) -> String {
        use std::io::{Read, Write};
        let mut byte = [0u8];
        let mut body = Vec::new();
        loop {
            self.s.read_exact(&mut byte).expect("gdb stub reply");
            if byte[0] == b'$' {
                break;
            }
        }
        loop {
            self.s.read_exact(&mut byte).expect("gdb stub reply");
            match byte[0] {
                b'#' => break,
                // Run-length encoding: repeat the last byte (count - 29) times.
                b'*' => {
                    self.s.read_exact(&mut byte).expect("gdb stub reply");
                    let last = *body.last().expect("run length with nothing before");
                    body.extend(std::iter::repeat_n(last, usize::from(byte[0]) - 29));
                }
                b => body.push(b),
            }
        }
        let mut sum = [0u8; 2];
        self.s.read_exact(&mut sum).unwrap();
        self.s.write_all(b"+").unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.reply()
    }

    fn interrupt(&mut self) -> String {
        use std::io::Write;
        self.s.write_all(&[3]).unwrap();
        self.reply()
    }
}
