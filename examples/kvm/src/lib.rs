//! A minimal KVM driver for the mapped-region demo: one VM, the guest memory
//! slots it is given (userspace addresses from `GuestMemory.regions()`), one
//! vCPU started in real mode at a given entry point, run until `hlt`.
//! Serial output (port 0x3f8) is collected; slot 0 logs dirty pages.
//! [`machine`] is the Linux example's machine (`examples/linux`).
#![cfg_attr(test, allow(dead_code))]

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use napi::bindgen_prelude::{BigInt, Function};
use napi::{Error, Result, Status};
use napi_derive::napi;

mod machine;

// ioctl numbers from <linux/kvm.h> (x86-64).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_GET_DIRTY_LOG: libc::c_ulong = 0x4010_AE42;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_GET_REGS: libc::c_ulong = 0x8090_AE81;
const KVM_SET_REGS: libc::c_ulong = 0x4090_AE82;
const KVM_GET_SREGS: libc::c_ulong = 0x8138_AE83;
const KVM_SET_SREGS: libc::c_ulong = 0x4138_AE84;
const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1;
const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;
const KVM_EXIT_IO_OUT: u8 = 1;

#[repr(C)]
struct UserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Regs {
    gpr: [u64; 16], // rax rbx rcx rdx rsi rdi rsp rbp r8..r15
    rip: u64,
    rflags: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Segment {
    base: u64,
    limit: u32,
    selector: u16,
    type_: u8,
    present: u8,
    dpl: u8,
    db: u8,
    s: u8,
    l: u8,
    g: u8,
    avl: u8,
    unusable: u8,
    padding: u8,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Dtable {
    base: u64,
    limit: u16,
    padding: [u16; 3],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Sregs {
    segs: [Segment; 6], // cs ds es fs gs ss
    tr: Segment,
    ldt: Segment,
    gdt: Dtable,
    idt: Dtable,
    cr: [u64; 5], // cr0 cr2 cr3 cr4 cr8
    efer: u64,
    apic_base: u64,
    interrupt_bitmap: [u64; 4],
}

#[repr(C)]
struct DirtyLog {
    slot: u32,
    padding: u32,
    bitmap: *mut u64,
}

const _: () = assert!(std::mem::size_of::<Regs>() == 144);
const _: () = assert!(std::mem::size_of::<Sregs>() == 312);
const _: () = assert!(std::mem::size_of::<UserspaceMemoryRegion>() == 32);

fn os_error(what: &str) -> Error {
    Error::new(
        Status::GenericFailure,
        format!("{what}: {}", std::io::Error::last_os_error()),
    )
}

/// `ioctl` returning its non-negative result or an error naming the call.
///
/// # Safety
/// `arg` must be what the ioctl `request` expects.
unsafe fn ioctl(fd: RawFd, request: libc::c_ulong, arg: libc::c_ulong, what: &str) -> Result<i32> {
    // SAFETY: guaranteed by the caller.
    let ret = unsafe { libc::ioctl(fd, request, arg) };
    if ret < 0 {
        Err(os_error(what))
    } else {
        Ok(ret)
    }
}

/// `ioctl` with a pointer to `arg`.
///
/// # Safety
/// `T` must be the structure the ioctl `request` reads or writes.
unsafe fn ioctl_with<T>(fd: RawFd, request: libc::c_ulong, arg: &mut T, what: &str) -> Result<i32> {
    // SAFETY: guaranteed by the caller; `arg` is valid for reads and writes of a `T`.
    unsafe { ioctl(fd, request, arg as *mut T as libc::c_ulong, what) }
}

/// Gives the VM `vm` its memory slots, slot `i` with `flags(i, slot)`.
fn set_slots(vm: RawFd, slots: &[Slot], flags: impl Fn(usize) -> u32) -> Result<()> {
    for (i, slot) in slots.iter().enumerate() {
        let mut region = UserspaceMemoryRegion {
            slot: i as u32,
            flags: flags(i),
            guest_phys_addr: big_u64(&slot.guest_address, "guestAddress")?,
            memory_size: slot.size as u64,
            userspace_addr: big_u64(&slot.userspace_address, "userspaceAddress")?,
        };
        // SAFETY: a kvm_userspace_memory_region; KVM checks that the userspace
        // range is accessible memory of this process.
        unsafe {
            ioctl_with(
                vm,
                KVM_SET_USER_MEMORY_REGION,
                &mut region,
                "KVM_SET_USER_MEMORY_REGION",
            )
        }?;
    }
    Ok(())
}

/// A vCPU of `vm` and its mapped `kvm_run` structure (address, size).
fn create_vcpu(kvm: RawFd, vm: RawFd) -> Result<(OwnedFd, *mut u8, usize)> {
    // SAFETY: KVM_CREATE_VCPU takes the vCPU id.
    let vcpu = owned(unsafe { ioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU") }?);
    // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no argument.
    let size = unsafe { ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE") }? as usize;
    // SAFETY: mapping the vCPU's shared kvm_run structure, as KVM documents.
    let run = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu.as_raw_fd(),
            0,
        )
    };
    if run == libc::MAP_FAILED {
        return Err(os_error("mmap kvm_run"));
    }
    Ok((vcpu, run.cast(), size))
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a KVM ioctl and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn open_kvm() -> Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| Error::new(Status::GenericFailure, format!("/dev/kvm: {e}")))
}

/// Whether `/dev/kvm` can be opened and speaks API version 12; otherwise why not.
#[napi]
pub fn kvm_unavailable_reason() -> Option<String> {
    let kvm = match open_kvm() {
        Ok(f) => f,
        Err(e) => return Some(e.reason),
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument.
    match unsafe {
        ioctl(
            kvm.as_raw_fd(),
            KVM_GET_API_VERSION,
            0,
            "KVM_GET_API_VERSION",
        )
    } {
        Ok(12) => None,
        Ok(v) => Some(format!("KVM API version {v}, expected 12")),
        Err(e) => Some(e.reason),
    }
}

/// A memory slot, as `GuestMemory.regions()` lists it.
#[napi(object)]
pub struct Slot {
    /// Guest-physical start address.
    pub guest_address: BigInt,
    /// Size in bytes.
    pub size: f64,
    /// Where the slot is mapped in this process.
    pub userspace_address: BigInt,
}

/// What the run did.
#[napi(object)]
pub struct RunResult {
    /// `"hlt"` when the guest halted.
    pub exit: String,
    /// Bytes the guest wrote to the serial port (0x3f8).
    pub serial: String,
    /// Port-I/O exits handled.
    pub io_exits: u32,
    /// The guest's instruction pointer at the end.
    pub rip: f64,
    /// Guest pages of slot 0 the guest wrote (KVM dirty log), by page number.
    pub dirty_pages: Vec<u32>,
}

fn big_u64(value: &BigInt, what: &str) -> Result<u64> {
    let (signed, v, lossless) = value.get_u64();
    if signed || !lossless {
        return Err(Error::new(
            Status::InvalidArg,
            format!("{what} must be a non-negative 64-bit integer"),
        ));
    }
    Ok(v)
}

/// Creates a VM with `slots`, runs one vCPU in real mode from `entry` (CS = 0)
/// until `hlt` or `max_exits` exits. With `on_serial`, each byte the guest
/// writes to the serial port is also handed to it as it is written (from the
/// thread running the vCPU: a worker forwards it to the thread that serves
/// the console).
#[napi]
pub fn run_real_mode(
    slots: Vec<Slot>,
    entry: u32,
    max_exits: u32,
    on_serial: Option<Function<u32, ()>>,
) -> Result<RunResult> {
    let kvm = open_kvm()?;
    // SAFETY: KVM_CREATE_VM takes the machine type (0).
    let vm = owned(unsafe { ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0, "KVM_CREATE_VM") }?);
    let slot0_pages = slots
        .first()
        .map_or(0, |s| (s.size as usize).div_ceil(4096));
    set_slots(vm.as_raw_fd(), &slots, |i| {
        if i == 0 {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        }
    })?;
    let (vcpu, run, run_size) = create_vcpu(kvm.as_raw_fd(), vm.as_raw_fd())?;
    let mut forward = |bytes: &[u8]| -> Result<()> {
        if let Some(f) = &on_serial {
            for &b in bytes {
                f.call(b as u32)?;
            }
        }
        Ok(())
    };
    let result = drive(vcpu.as_raw_fd(), run, entry, max_exits, &mut forward);
    // SAFETY: unmapping the kvm_run mapping made above.
    unsafe { libc::munmap(run.cast(), run_size) };
    let (exit, serial, io_exits, rip) = result?;
    let dirty_pages = dirty_log(vm.as_raw_fd(), slot0_pages)?;
    Ok(RunResult {
        exit,
        serial,
        io_exits,
        rip: rip as f64,
        dirty_pages,
    })
}

/// Puts the vCPU `vcpu` in real mode at `entry`: every segment at base 0 with
/// selector 0 (so CS:IP = 0:entry), `rip = entry`, flags with interrupts off.
fn set_real_mode(vcpu: RawFd, entry: u32) -> Result<()> {
    let mut sregs = Sregs::default();
    // SAFETY: KVM_GET_SREGS writes a kvm_sregs.
    unsafe { ioctl_with(vcpu, KVM_GET_SREGS, &mut sregs, "KVM_GET_SREGS") }?;
    for seg in &mut sregs.segs {
        seg.base = 0;
        seg.selector = 0;
    }
    // SAFETY: KVM_SET_SREGS reads a kvm_sregs.
    unsafe { ioctl_with(vcpu, KVM_SET_SREGS, &mut sregs, "KVM_SET_SREGS") }?;
    let mut regs = Regs {
        rip: entry as u64,
        rflags: 2,
        ..Regs::default()
    };
    // SAFETY: KVM_SET_REGS reads a kvm_regs.
    unsafe { ioctl_with(vcpu, KVM_SET_REGS, &mut regs, "KVM_SET_REGS") }?;
    Ok(())
}

fn drive(
    vcpu: RawFd,
    run: *mut u8,
    entry: u32,
    max_exits: u32,
    on_serial: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<(String, String, u32, u64)> {
    set_real_mode(vcpu, entry)?;
    let mut serial = Vec::new();
    let mut io_exits = 0;
    let mut exit = String::from("limit");
    for _ in 0..max_exits {
        // SAFETY: KVM_RUN takes no argument; exit details land in `run`.
        if unsafe { libc::ioctl(vcpu, KVM_RUN, 0) } < 0 {
            // A signal for this thread (Node's own, a child's SIGCHLD) ends
            // KVM_RUN before the guest exits: enter it again.
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(os_error("KVM_RUN"));
        }
        // SAFETY: `run` maps a kvm_run: exit_reason is the u32 at offset 8, the
        // io exit's fields start at offset 32, its data at run + data_offset.
        let reason = unsafe { ptr::read_unaligned(run.add(8).cast::<u32>()) };
        match reason {
            KVM_EXIT_HLT => {
                exit = "hlt".into();
                break;
            }
            KVM_EXIT_IO => {
                io_exits += 1;
                // SAFETY: see above; a port-I/O exit fills the io struct.
                unsafe {
                    let direction = *run.add(32);
                    let size = *run.add(33) as usize;
                    let port = ptr::read_unaligned(run.add(34).cast::<u16>());
                    let count = ptr::read_unaligned(run.add(36).cast::<u32>()) as usize;
                    let data_offset = ptr::read_unaligned(run.add(40).cast::<u64>()) as usize;
                    if direction == KVM_EXIT_IO_OUT && port == 0x3f8 && size == 1 {
                        let bytes = std::slice::from_raw_parts(run.add(data_offset), count);
                        serial.extend_from_slice(bytes);
                        on_serial(bytes)?;
                    }
                }
            }
            other => {
                exit = format!("exit reason {other}");
                break;
            }
        }
    }
    let mut regs = Regs::default();
    // SAFETY: KVM_GET_REGS writes a kvm_regs.
    unsafe {
        ioctl(
            vcpu,
            KVM_GET_REGS,
            &mut regs as *mut _ as libc::c_ulong,
            "KVM_GET_REGS",
        )
    }?;
    Ok((
        exit,
        String::from_utf8_lossy(&serial).into_owned(),
        io_exits,
        regs.rip,
    ))
}

fn dirty_log(vm: RawFd, pages: usize) -> Result<Vec<u32>> {
    let mut bitmap = vec![0u64; pages.div_ceil(64).max(1)];
    let log = DirtyLog {
        slot: 0,
        padding: 0,
        bitmap: bitmap.as_mut_ptr(),
    };
    // SAFETY: the bitmap has one bit per page of slot 0.
    unsafe {
        ioctl(
            vm,
            KVM_GET_DIRTY_LOG,
            &log as *const _ as libc::c_ulong,
            "KVM_GET_DIRTY_LOG",
        )
    }?;
    Ok((0..pages)
        .filter(|&p| bitmap[p / 64] & (1 << (p % 64)) != 0)
        .map(|p| p as u32)
        .collect())
}
