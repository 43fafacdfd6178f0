//! A KVM machine for the Linux example (`examples/linux`): one VM with an
//! in-kernel IRQ chip and PIT, the memory slots it is given (userspace
//! addresses from `GuestMemory.regions()`), one vCPU with the host's supported
//! CPUID, started in 32-bit protected mode at the kernel's entry (the Linux
//! boot protocol's 32-bit entry). `run()` returns each exit the VMM must serve
//! (port I/O, MMIO, what KVM's emulator could not do, shutdown); the device
//! models and the boot logic are TypeScript. Not part of the package.
//!
//! `Machine.realMode` is the migration example's (`examples/migrate`): a bare
//! VM (no in-kernel IRQ chip, so `hlt` is an exit) whose vCPU state
//! `saveState()` hands out and `restoreState()` takes.
//!
//! `Machine.protectedMode` is the dirty-tracking bench's (`bench/dirty.mjs`):
//! a bare VM whose vCPU starts in 32-bit flat protected mode (all 4 GiB
//! addressable, no paging), optionally logging the pages the guest writes,
//! which `dirtyLog(slot)` takes (`KVM_GET_DIRTY_LOG`).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

use napi::bindgen_prelude::{BigInt, Buffer};
use napi::{Error, Result, Status};
use napi_derive::napi;

use crate::{
    big_u64, create_vcpu, ioctl, ioctl_with, open_kvm, owned, set_real_mode, set_slots, DirtyLog,
    Regs, Segment, Slot, Sregs, KVM_CREATE_VM, KVM_GET_DIRTY_LOG, KVM_GET_REGS, KVM_GET_SREGS,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_RUN, KVM_SET_REGS, KVM_SET_SREGS,
};

const KVM_GET_SUPPORTED_CPUID: libc::c_ulong = 0xC008_AE05;
const KVM_SET_TSS_ADDR: libc::c_ulong = 0xAE47;
const KVM_SET_IDENTITY_MAP_ADDR: libc::c_ulong = 0x4008_AE48;
const KVM_CREATE_IRQCHIP: libc::c_ulong = 0xAE60;
const KVM_IRQ_LINE: libc::c_ulong = 0x4008_AE61;
const KVM_CREATE_PIT2: libc::c_ulong = 0x4040_AE77;
const KVM_TRANSLATE: libc::c_ulong = 0xC018_AE85;
const KVM_GET_FPU: libc::c_ulong = 0x81A0_AE8C;
const KVM_SET_FPU: libc::c_ulong = 0x41A0_AE8D;
const KVM_SET_CPUID2: libc::c_ulong = 0x4008_AE90;
const KVM_GET_VCPU_EVENTS: libc::c_ulong = 0x8040_AE9F;
const KVM_SET_VCPU_EVENTS: libc::c_ulong = 0x4040_AEA0;
const KVM_MEM_READONLY: u32 = 2;

const EXIT_IO: u32 = 2;
const EXIT_DEBUG: u32 = 4;
const EXIT_HLT: u32 = 5;
const EXIT_MMIO: u32 = 6;
const EXIT_SHUTDOWN: u32 = 8;
const EXIT_FAIL_ENTRY: u32 = 9;
const EXIT_INTR: u32 = 10;
const EXIT_INTERNAL_ERROR: u32 = 17;
const EXIT_SYSTEM_EVENT: u32 = 24;

/// Entries of `KVM_GET_SUPPORTED_CPUID` room is made for.
const CPUID_ENTRIES: usize = 256;

#[repr(C)]
#[derive(Default)]
struct Translation {
    linear_address: u64,
    physical_address: u64,
    valid: u8,
    writeable: u8,
    usermode: u8,
    pad: [u8; 5],
}

const _: () = assert!(std::mem::size_of::<Translation>() == 24);

/// `struct kvm_fpu` as bytes: `mxcsr` is the `u32` at offset 408.
const FPU_SIZE: usize = 416;
const FPU_MXCSR: usize = 408;
/// `struct kvm_vcpu_events` as bytes: the exception is the first 8.
const EVENTS_SIZE: usize = 64;

/// `saveState()`'s format, version 1: a 16-byte header — the magic `MRvc`, the
/// version, the sizes of the two parts (u32, little-endian) — then
/// `struct kvm_regs` and `struct kvm_sregs` as KVM hands them out.
const STATE_MAGIC: [u8; 4] = *b"MRvc";
const STATE_VERSION: u32 = 1;
const STATE_HEADER: usize = 16;
const REGS_SIZE: usize = std::mem::size_of::<Regs>();
const SREGS_SIZE: usize = std::mem::size_of::<Sregs>();
const STATE_SIZE: usize = STATE_HEADER + REGS_SIZE + SREGS_SIZE;

/// An exit the VMM serves.
#[napi(object)]
pub struct Exit {
    /// `io`, `mmio`, `hlt`, `shutdown`, `system-event`, `internal-error`,
    /// `fail-entry`, `intr`, `debug`, or `exit <n>`.
    pub reason: String,
    /// Port I/O: the port; MMIO: 0.
    pub port: u32,
    /// Port I/O and MMIO: bytes per access.
    pub size: u32,
    /// Port I/O and MMIO: a write (else a read, to be answered).
    pub write: bool,
    /// The value written (port I/O, MMIO up to 4 bytes).
    pub value: u32,
    /// MMIO: the guest-physical address.
    pub address: BigInt,
    /// `internal-error`: KVM's suberror (1: the emulator met an instruction it cannot do);
    /// `fail-entry`: the hardware reason; `system-event`: its type.
    pub detail: u32,
}

/// The machine: a VM and its one vCPU.
#[napi]
pub struct Machine {
    _kvm: File,
    vm: OwnedFd,
    vcpu: OwnedFd,
    run: *mut u8,
    run_size: usize,
    /// Each slot's size in pages, by slot number: the size of its dirty log.
    slot_pages: Vec<usize>,
    /// Whether the slots log dirty pages (`KVM_MEM_LOG_DIRTY_PAGES`).
    logged: bool,
}

/// Options of `Machine.protectedMode`.
#[napi(object)]
pub struct ProtectedModeOptions {
    /// Every slot logs the pages the guest writes (`KVM_MEM_LOG_DIRTY_PAGES`),
    /// for `dirtyLog(slot)`.
    pub log_dirty: Option<bool>,
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SAFETY: `run` is the kvm_run mapping made in `create`, unmapped once.
        unsafe { libc::munmap(self.run.cast(), self.run_size) };
    }
}

impl Machine {
    /// A VM over `slots`, slot `i` with `flags(i)`, with an in-kernel IRQ chip
    /// and PIT if `irqchip`, and one vCPU whose CPUID is what KVM supports.
    fn create(slots: &[Slot], flags: impl Fn(usize) -> u32, irqchip: bool) -> Result<Machine> {
        let kvm = open_kvm()?;
        // SAFETY: KVM_CREATE_VM takes the machine type (0).
        let vm = owned(unsafe { ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0, "KVM_CREATE_VM") }?);
        let fd = vm.as_raw_fd();
        // Intel needs three pages for the TSS and one for the identity map
        // below 4 GiB, outside guest RAM: just under the BIOS area's end.
        // SAFETY: KVM_SET_TSS_ADDR takes the address as its argument.
        unsafe { ioctl(fd, KVM_SET_TSS_ADDR, 0xfffb_d000, "KVM_SET_TSS_ADDR") }?;
        let identity: u64 = 0xfffb_c000;
        // SAFETY: KVM_SET_IDENTITY_MAP_ADDR reads a u64.
        unsafe {
            ioctl(
                fd,
                KVM_SET_IDENTITY_MAP_ADDR,
                &identity as *const u64 as libc::c_ulong,
                "KVM_SET_IDENTITY_MAP_ADDR",
            )
        }?;
        if irqchip {
            // SAFETY: KVM_CREATE_IRQCHIP takes no argument.
            unsafe { ioctl(fd, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP") }?;
            let mut pit = [0u8; 64]; // struct kvm_pit_config: flags 0
                                     // SAFETY: KVM_CREATE_PIT2 reads a 64-byte kvm_pit_config.
            unsafe { ioctl_with(fd, KVM_CREATE_PIT2, &mut pit, "KVM_CREATE_PIT2") }?;
        }
        set_slots(fd, slots, &flags)?;
        let (vcpu, run, run_size) = create_vcpu(kvm.as_raw_fd(), fd)?;
        let machine = Machine {
            _kvm: kvm,
            vm,
            vcpu,
            run,
            run_size,
            slot_pages: slots
                .iter()
                .map(|s| (s.size as usize).div_ceil(4096))
                .collect(),
            logged: (0..slots.len()).any(|i| flags(i) & KVM_MEM_LOG_DIRTY_PAGES != 0),
        };
        set_cpuid(machine._kvm.as_raw_fd(), machine.vcpu.as_raw_fd())?;
        Ok(machine)
    }

    /// Flat 32-bit protected mode at `entry` with `esi = esi`: see `set_boot_state`.
    fn set_flat_protected_mode(&mut self, entry: u32, esi: u32) -> Result<()> {
        let mut sregs = Sregs::default();
        // SAFETY: KVM_GET_SREGS writes a kvm_sregs.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_GET_SREGS,
                &mut sregs,
                "KVM_GET_SREGS",
            )
        }?;
        let flat = |selector: u16, type_: u8| Segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.segs[0] = flat(0x10, 0xb); // cs: execute/read, accessed
        for i in 1..6 {
            sregs.segs[i] = flat(0x18, 0x3); // ds es fs gs ss: read/write, accessed
        }
        sregs.tr = Segment {
            selector: 0x20,
            limit: 0x67,
            type_: 0xb, // busy 32-bit TSS
            present: 1,
            ..Segment::default()
        };
        sregs.ldt = Segment {
            type_: 0x2,
            present: 1,
            unusable: 1,
            ..Segment::default()
        };
        sregs.cr[0] = 0x11; // PE | ET
        sregs.cr[4] = 0;
        sregs.efer = 0;
        // SAFETY: KVM_SET_SREGS reads a kvm_sregs.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_SET_SREGS,
                &mut sregs,
                "KVM_SET_SREGS",
            )
        }?;
        let mut regs = Regs {
            rip: entry as u64,
            rflags: 2,
            ..Regs::default()
        };
        regs.gpr[4] = esi as u64; // rsi
        self.put_regs(&regs)
    }

    /// Completes the operation of the last exit (a port-I/O or MMIO access
    /// finishes only when `KVM_RUN` is entered again: until then the vCPU's
    /// registers do not show it) without running the guest: `KVM_RUN` with
    /// `immediate_exit` set, which returns `EINTR` once it is done.
    fn complete_pending(&mut self) -> Result<()> {
        // SAFETY: `run` maps a kvm_run: `immediate_exit` is the u8 at offset 1.
        unsafe { ptr::write_volatile(self.run.add(1), 1) };
        // SAFETY: KVM_RUN takes no argument.
        let ret = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_RUN, 0) };
        let error = std::io::Error::last_os_error();
        // SAFETY: as above.
        unsafe { ptr::write_volatile(self.run.add(1), 0) };
        match ret {
            0.. => Err(Error::new(
                Status::GenericFailure,
                "KVM_RUN with immediate_exit ran the guest (no KVM_CAP_IMMEDIATE_EXIT?)",
            )),
            _ if error.raw_os_error() == Some(libc::EINTR) => Ok(()),
            _ => Err(Error::new(
                Status::GenericFailure,
                format!("KVM_RUN (immediate_exit): {error}"),
            )),
        }
    }
}

#[napi]
impl Machine {
    /// A VM over `slots` (`readonly` ones as `KVM_MEM_READONLY`), with an
    /// in-kernel IRQ chip (PIC, IOAPIC, LAPIC) and PIT, and one vCPU whose
    /// CPUID is what KVM supports on this host.
    #[napi(constructor)]
    pub fn new(slots: Vec<Slot>, readonly: Vec<bool>) -> Result<Machine> {
        let flags = |i: usize| {
            if readonly.get(i).copied().unwrap_or(false) {
                KVM_MEM_READONLY
            } else {
                0
            }
        };
        Machine::create(&slots, flags, true)
    }

    /// A bare VM over `slots`, for a real-mode guest: no in-kernel IRQ chip
    /// (so `hlt` is an exit to the VMM), one vCPU. Start the vCPU with
    /// `setRealModeEntry`, or with `restoreState`.
    #[napi(factory)]
    pub fn real_mode(slots: Vec<Slot>) -> Result<Machine> {
        Machine::create(&slots, |_| 0, false)
    }

    /// Starts the vCPU in real mode at `entry` (every segment at 0, interrupts off).
    #[napi]
    pub fn set_real_mode_entry(&mut self, entry: u32) -> Result<()> {
        set_real_mode(self.vcpu.as_raw_fd(), entry)
    }

    /// The vCPU's state, to resume it in another machine (`restoreState`):
    /// call it between exits, with a port-I/O or MMIO read answered. It first
    /// completes the last exit's access (without running the guest), then
    /// takes the general registers (`KVM_GET_REGS`) and the segment, control
    /// and descriptor-table registers, EFER, the APIC base and the pending
    /// interrupt bitmap (`KVM_GET_SREGS`). That is all of a real-mode integer
    /// guest's state on a machine without an in-kernel IRQ chip; not covered:
    /// FPU/SSE/AVX state, XCRs, MSRs (the TSC among them), debug registers,
    /// pending exceptions and NMIs (vCPU events), the MP state, and the
    /// VM-wide IRQ chip, PIT and clock. Format: see `restoreState`.
    #[napi]
    pub fn save_state(&mut self) -> Result<Buffer> {
        self.complete_pending()?;
        let fd = self.vcpu.as_raw_fd();
        let mut regs = [0u8; REGS_SIZE];
        // SAFETY: KVM_GET_REGS writes a kvm_regs, REGS_SIZE bytes.
        unsafe { ioctl_with(fd, KVM_GET_REGS, &mut regs, "KVM_GET_REGS") }?;
        let mut sregs = [0u8; SREGS_SIZE];
        // SAFETY: KVM_GET_SREGS writes a kvm_sregs, SREGS_SIZE bytes.
        unsafe { ioctl_with(fd, KVM_GET_SREGS, &mut sregs, "KVM_GET_SREGS") }?;
        let mut state = Vec::with_capacity(STATE_SIZE);
        state.extend_from_slice(&STATE_MAGIC);
        state.extend_from_slice(&STATE_VERSION.to_le_bytes());
        state.extend_from_slice(&(REGS_SIZE as u32).to_le_bytes());
        state.extend_from_slice(&(SREGS_SIZE as u32).to_le_bytes());
        state.extend_from_slice(&regs);
        state.extend_from_slice(&sregs);
        Ok(state.into())
    }

    /// Sets the vCPU's state to one `saveState` took (in this process or
    /// another): a 16-byte header — `MRvc`, version 1, the sizes of
    /// `kvm_regs` (144) and `kvm_sregs` (312) as little-endian u32s — then the
    /// two structures. Anything else (another length, magic, version or part
    /// size) is refused before the vCPU is touched.
    #[napi]
    pub fn restore_state(&mut self, state: Buffer) -> Result<()> {
        let state = state.to_vec();
        let invalid = |why: String| Error::new(Status::InvalidArg, format!("vCPU state: {why}"));
        if state.len() != STATE_SIZE {
            return Err(invalid(format!(
                "{} bytes; version {STATE_VERSION} is {STATE_SIZE}",
                state.len()
            )));
        }
        let word = |at: usize| {
            u32::from_le_bytes([state[at], state[at + 1], state[at + 2], state[at + 3]])
        };
        if state[..4] != STATE_MAGIC {
            return Err(invalid("not a saveState() buffer (magic)".into()));
        }
        if word(4) != STATE_VERSION {
            return Err(invalid(format!(
                "version {}; this machine reads {STATE_VERSION}",
                word(4)
            )));
        }
        if word(8) as usize != REGS_SIZE || word(12) as usize != SREGS_SIZE {
            return Err(invalid(format!(
                "parts of {} and {} bytes; expected {REGS_SIZE} and {SREGS_SIZE}",
                word(8),
                word(12)
            )));
        }
        let mut regs = [0u8; REGS_SIZE];
        regs.copy_from_slice(&state[STATE_HEADER..STATE_HEADER + REGS_SIZE]);
        let mut sregs = [0u8; SREGS_SIZE];
        sregs.copy_from_slice(&state[STATE_HEADER + REGS_SIZE..]);
        let fd = self.vcpu.as_raw_fd();
        // SAFETY: KVM_SET_SREGS reads a kvm_sregs, SREGS_SIZE bytes.
        unsafe { ioctl_with(fd, KVM_SET_SREGS, &mut sregs, "KVM_SET_SREGS") }?;
        // SAFETY: KVM_SET_REGS reads a kvm_regs, REGS_SIZE bytes.
        unsafe { ioctl_with(fd, KVM_SET_REGS, &mut regs, "KVM_SET_REGS") }?;
        Ok(())
    }

    /// The VM's fd, for [`irq_line_fd`] from another thread.
    #[napi(getter)]
    pub fn vm_fd(&self) -> i32 {
        self.vm.as_raw_fd()
    }

    /// Starts the vCPU as the Linux boot protocol's 32-bit entry wants it:
    /// protected mode, paging off, flat 4 GiB code (selector 0x10) and data
    /// (0x18) segments, interrupts off, `eip = entry`, `esi = boot_params`.
    #[napi]
    pub fn set_boot_state(&mut self, entry: u32, boot_params: u32) -> Result<()> {
        self.set_flat_protected_mode(entry, boot_params)
    }

    /// A bare VM over `slots` for a 32-bit protected-mode guest: no in-kernel
    /// IRQ chip (so `hlt` is an exit to the VMM), one vCPU; with `logDirty`,
    /// every slot logs the pages the guest writes (`dirtyLog`). Start the vCPU
    /// with `setProtectedModeEntry`.
    #[napi(factory)]
    pub fn protected_mode(
        slots: Vec<Slot>,
        options: Option<ProtectedModeOptions>,
    ) -> Result<Machine> {
        let log = options.and_then(|o| o.log_dirty).unwrap_or(false);
        Machine::create(
            &slots,
            |_| if log { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            false,
        )
    }

    /// Starts the vCPU at `entry` in 32-bit protected mode, paging off, with
    /// flat 4 GiB code and data segments (the whole guest-physical space below
    /// 4 GiB addressable as is), interrupts off, the other registers 0.
    #[napi]
    pub fn set_protected_mode_entry(&mut self, entry: u32) -> Result<()> {
        self.set_flat_protected_mode(entry, 0)
    }

    /// The pages of memory slot `slot` the guest wrote since the slot was made
    /// or last asked (`KVM_GET_DIRTY_LOG`, which clears the log), in KVM's
    /// layout: bit `i` of little-endian 64-bit word `w` is page `64w + i` of
    /// the slot, `ceil(pages / 64)` words. Only for a machine made with
    /// `protectedMode(slots, { logDirty: true })`.
    #[napi]
    pub fn dirty_log(&self, slot: u32) -> Result<Buffer> {
        if !self.logged {
            return Err(Error::new(
                Status::InvalidArg,
                "this machine's slots do not log dirty pages (protectedMode(slots, { logDirty: true }))",
            ));
        }
        let pages = *self.slot_pages.get(slot as usize).ok_or_else(|| {
            Error::new(
                Status::InvalidArg,
                format!(
                    "slot {slot}: the machine has {} slots",
                    self.slot_pages.len()
                ),
            )
        })?;
        let mut bitmap = vec![0u64; pages.div_ceil(64).max(1)];
        let mut log = DirtyLog {
            slot,
            padding: 0,
            bitmap: bitmap.as_mut_ptr(),
        };
        // SAFETY: KVM_GET_DIRTY_LOG reads a kvm_dirty_log and writes
        // ceil(pages / 64) words of the slot's bitmap: `bitmap` has as many,
        // `pages` being the size this machine gave the slot.
        unsafe {
            ioctl_with(
                self.vm.as_raw_fd(),
                KVM_GET_DIRTY_LOG,
                &mut log,
                "KVM_GET_DIRTY_LOG",
            )
        }?;
        Ok(bitmap
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect::<Vec<u8>>()
            .into())
    }

    /// Runs the vCPU until the VMM must serve an exit.
    #[napi]
    pub fn run(&mut self) -> Result<Exit> {
        // SAFETY: KVM_RUN takes no argument; exit details land in `run`.
        let ret = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_RUN, 0) };
        let mut exit = Exit {
            reason: String::new(),
            port: 0,
            size: 0,
            write: false,
            value: 0,
            address: BigInt::from(0u64),
            detail: 0,
        };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                exit.reason = "intr".into();
                return Ok(exit);
            }
            return Err(Error::new(Status::GenericFailure, format!("KVM_RUN: {e}")));
        }
        // SAFETY: `run` maps a kvm_run; exit_reason is the u32 at offset 8 and
        // the exit's union starts at offset 32.
        let reason = unsafe { ptr::read_unaligned(self.run.add(8).cast::<u32>()) };
        let at = |offset: usize| {
            // SAFETY: offsets inside the kvm_run mapping's first page.
            unsafe { self.run.add(offset) }
        };
        exit.reason = match reason {
            EXIT_IO => {
                // SAFETY: a port-I/O exit fills kvm_run.io.
                unsafe {
                    exit.write = *at(32) == 1;
                    exit.size = *at(33) as u32;
                    exit.port = ptr::read_unaligned(at(34).cast::<u16>()) as u32;
                    let count = ptr::read_unaligned(at(36).cast::<u32>());
                    let data = ptr::read_unaligned(at(40).cast::<u64>()) as usize;
                    if count != 1 {
                        return Err(Error::new(
                            Status::GenericFailure,
                            format!("string port I/O (count {count}) is not served"),
                        ));
                    }
                    if exit.write {
                        let mut v = [0u8; 4];
                        ptr::copy_nonoverlapping(
                            at(data),
                            v.as_mut_ptr(),
                            exit.size.min(4) as usize,
                        );
                        exit.value = u32::from_le_bytes(v);
                    }
                }
                "io".into()
            }
            EXIT_MMIO => {
                // SAFETY: an MMIO exit fills kvm_run.mmio: phys_addr, data[8], len, is_write.
                unsafe {
                    exit.address = BigInt::from(ptr::read_unaligned(at(32).cast::<u64>()));
                    exit.size = ptr::read_unaligned(at(48).cast::<u32>());
                    exit.write = *at(52) != 0;
                    exit.value = ptr::read_unaligned(at(40).cast::<u32>());
                    if !exit.write {
                        // Nothing is there: reads see all ones until the VMM answers.
                        ptr::write_bytes(at(40), 0xff, 8);
                    }
                }
                "mmio".into()
            }
            EXIT_HLT => "hlt".into(),
            EXIT_SHUTDOWN => "shutdown".into(),
            EXIT_INTR => "intr".into(),
            EXIT_DEBUG => "debug".into(),
            EXIT_FAIL_ENTRY => {
                // SAFETY: kvm_run.fail_entry starts with the hardware reason (u64).
                exit.detail = unsafe { ptr::read_unaligned(at(32).cast::<u64>()) } as u32;
                "fail-entry".into()
            }
            EXIT_INTERNAL_ERROR => {
                // SAFETY: kvm_run.internal starts with the suberror (u32).
                exit.detail = unsafe { ptr::read_unaligned(at(32).cast::<u32>()) };
                "internal-error".into()
            }
            EXIT_SYSTEM_EVENT => {
                // SAFETY: kvm_run.system_event starts with its type (u32).
                exit.detail = unsafe { ptr::read_unaligned(at(32).cast::<u32>()) };
                "system-event".into()
            }
            other => format!("exit {other}"),
        };
        Ok(exit)
    }

    /// Answers the port-I/O read of the last exit (the next `run()` hands it to the guest).
    #[napi]
    pub fn answer_io(&mut self, value: u32) {
        // SAFETY: the last exit was a port-I/O read: its data offset points at
        // `size` bytes inside the kvm_run mapping.
        unsafe {
            let size = *self.run.add(33) as usize;
            let data = ptr::read_unaligned(self.run.add(40).cast::<u64>()) as usize;
            let bytes = value.to_le_bytes();
            ptr::copy_nonoverlapping(bytes.as_ptr(), self.run.add(data), size.min(4));
        }
    }

    /// Answers the MMIO read of the last exit.
    #[napi]
    pub fn answer_mmio(&mut self, value: u32) {
        // SAFETY: the last exit was an MMIO read: its data field is 8 bytes at offset 40.
        unsafe {
            ptr::write_bytes(self.run.add(40), 0, 8);
            ptr::write_unaligned(self.run.add(40).cast::<u32>(), value);
        }
    }

    /// The general registers: `[rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8..r15, rip, rflags]`.
    #[napi]
    pub fn regs(&self) -> Result<Vec<BigInt>> {
        let regs = self.get_regs()?;
        let mut out: Vec<BigInt> = regs.gpr.iter().map(|&r| BigInt::from(r)).collect();
        out.push(BigInt::from(regs.rip));
        out.push(BigInt::from(regs.rflags));
        Ok(out)
    }

    /// Moves the instruction pointer (past an instruction the VMM emulated).
    #[napi]
    pub fn set_rip(&mut self, rip: BigInt) -> Result<()> {
        let mut regs = self.get_regs()?;
        regs.rip = big_u64(&rip, "rip")?;
        self.put_regs(&regs)
    }

    /// The guest-physical address of the guest-virtual `address` in the
    /// vCPU's current paging mode (`KVM_TRANSLATE`), or null if unmapped.
    #[napi]
    pub fn translate(&self, address: BigInt) -> Result<Option<BigInt>> {
        let mut t = Translation {
            linear_address: big_u64(&address, "address")?,
            ..Translation::default()
        };
        // SAFETY: KVM_TRANSLATE reads and writes a kvm_translation.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_TRANSLATE,
                &mut t,
                "KVM_TRANSLATE",
            )
        }?;
        Ok((t.valid != 0).then(|| BigInt::from(t.physical_address)))
    }

    /// Sets the SSE control/status register (`MXCSR`), as `LDMXCSR` would.
    #[napi]
    pub fn set_mxcsr(&mut self, value: u32) -> Result<()> {
        let mut fpu = [0u8; FPU_SIZE];
        // SAFETY: KVM_GET_FPU writes a 416-byte kvm_fpu.
        unsafe { ioctl_with(self.vcpu.as_raw_fd(), KVM_GET_FPU, &mut fpu, "KVM_GET_FPU") }?;
        fpu[FPU_MXCSR..FPU_MXCSR + 4].copy_from_slice(&value.to_le_bytes());
        // SAFETY: KVM_SET_FPU reads a 416-byte kvm_fpu.
        unsafe { ioctl_with(self.vcpu.as_raw_fd(), KVM_SET_FPU, &mut fpu, "KVM_SET_FPU") }?;
        Ok(())
    }

    /// Injects exception `vector` (no error code) before the next instruction.
    #[napi]
    pub fn inject_exception(&mut self, vector: u32) -> Result<()> {
        let mut events = [0u8; EVENTS_SIZE];
        // SAFETY: KVM_GET_VCPU_EVENTS writes a 64-byte kvm_vcpu_events.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_GET_VCPU_EVENTS,
                &mut events,
                "KVM_GET_VCPU_EVENTS",
            )
        }?;
        events[0] = 1; // exception.injected
        events[1] = vector as u8; // exception.nr
        events[2] = 0; // has_error_code
        events[3] = 0; // pending
                       // flags (offset 20): only what is set above is taken.
        events[20..24].copy_from_slice(&0u32.to_le_bytes());
        // SAFETY: KVM_SET_VCPU_EVENTS reads a 64-byte kvm_vcpu_events.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_SET_VCPU_EVENTS,
                &mut events,
                "KVM_SET_VCPU_EVENTS",
            )
        }?;
        Ok(())
    }

    /// Sets interrupt line `irq` of the in-kernel IRQ chip to `level`.
    #[napi]
    pub fn irq_line(&self, irq: u32, level: bool) -> Result<()> {
        irq_line_fd(self.vm.as_raw_fd(), irq, level)
    }

    fn get_regs(&self) -> Result<Regs> {
        let mut regs = Regs::default();
        // SAFETY: KVM_GET_REGS writes a kvm_regs.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_GET_REGS,
                &mut regs,
                "KVM_GET_REGS",
            )
        }?;
        Ok(regs)
    }

    fn put_regs(&self, regs: &Regs) -> Result<()> {
        let mut regs = *regs;
        // SAFETY: KVM_SET_REGS reads a kvm_regs.
        unsafe {
            ioctl_with(
                self.vcpu.as_raw_fd(),
                KVM_SET_REGS,
                &mut regs,
                "KVM_SET_REGS",
            )
        }?;
        Ok(())
    }
}

/// `KVM_IRQ_LINE` on the VM `vm_fd` (from any thread: the console thread
/// raises the UART's interrupt while the vCPU thread is in `KVM_RUN`).
#[napi]
pub fn irq_line_fd(vm_fd: i32, irq: u32, level: bool) -> Result<()> {
    let mut line: [u32; 2] = [irq, level as u32];
    // SAFETY: KVM_IRQ_LINE reads a kvm_irq_level (irq, level); a wrong fd is
    // an error of the ioctl.
    unsafe { ioctl_with(vm_fd, KVM_IRQ_LINE, &mut line, "KVM_IRQ_LINE") }?;
    Ok(())
}

/// Gives the vCPU the CPUID KVM supports on this host.
fn set_cpuid(kvm: RawFd, vcpu: RawFd) -> Result<()> {
    // struct kvm_cpuid2: nent, padding, then 40-byte entries (inline: an array, not a Vec).
    let mut buf = Box::new([0u32; 2 + CPUID_ENTRIES * 10]);
    buf[0] = CPUID_ENTRIES as u32;
    // SAFETY: KVM_GET_SUPPORTED_CPUID fills up to `nent` entries of the buffer
    // and writes back how many.
    unsafe {
        ioctl_with(
            kvm,
            KVM_GET_SUPPORTED_CPUID,
            &mut *buf,
            "KVM_GET_SUPPORTED_CPUID",
        )
    }?;
    // SAFETY: KVM_SET_CPUID2 reads `nent` entries.
    unsafe { ioctl_with(vcpu, KVM_SET_CPUID2, &mut *buf, "KVM_SET_CPUID2") }?;
    Ok(())
}
