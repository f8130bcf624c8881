//! `kvm-floor`: the minimal KVM program, the baseline for the monitor's
//! launch-to-exit benchmark.
//!
//! It does what any KVM monitor must do and nothing more: open `/dev/kvm`,
//! create a VM, map 64 MiB of anonymous memory (`MAP_NORESERVE`, untouched
//! except for the code page), create one vCPU, run three 16-bit real-mode
//! instructions (`mov $0x3f8,%dx; out %al,(%dx); hlt`), serve the port-I/O
//! exit and stop at the `hlt` exit. Exit status 0 on success.
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};

const MEM_SIZE: usize = 64 << 20;
const CODE_ADDR: u64 = 0x1000;
/// mov $0x3f8,%dx; mov $'!',%al; out %al,(%dx); hlt
const CODE: [u8; 7] = [0xba, 0xf8, 0x03, 0xb0, b'!', 0xee, 0xf4];

fn main() {
    if let Err(e) = run() {
        eprintln!("kvm-floor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;

    // SAFETY: an anonymous private mapping with no fixed address; the result
    // is checked against MAP_FAILED below.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: CODE_ADDR + CODE.len() lies well inside the MEM_SIZE bytes just mapped.
    unsafe {
        std::ptr::copy_nonoverlapping(
            CODE.as_ptr(),
            (mem as *mut u8).add(CODE_ADDR as usize),
            CODE.len(),
        )
    };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
        flags: 0,
    };
    // SAFETY: the region is a live mapping of MEM_SIZE bytes that outlives the VM
    // (it is never unmapped; the process exits).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;

    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = CODE_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

    let mut saw_out = false;
    loop {
        match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::IoOut(0x3f8, data) if data == b"!" => saw_out = true,
            VcpuExit::Hlt if saw_out => return Ok(()),
            other => return Err(format!("unexpected exit: {other:?}")),
        }
    }
}
