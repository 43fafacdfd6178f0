//! A guarded copy: a plain `rep movsb` whose `SIGBUS` — a page that vanished
//! under a file mapping — is caught by a signal handler and turned into a
//! failed return, the way a kernel's exception table fixes up a faulting
//! `copy_from_user`. It costs a copy plus two cheap syscalls, against
//! `process_vm_readv`'s page pinning (see bench/RESULTS.md for what it costs).
//!
//! The handler only acts on a fault whose instruction pointer lies inside
//! [`mr_guarded_copy`]; any other `SIGBUS` goes to the handler that was there
//! before (or to the default action). Before each copy the caller checks that
//! the handler is still installed and that the thread does not block `SIGBUS`
//! (a blocked synchronous fault kills the process): someone may have replaced
//! it since, e.g. `process.on('SIGBUS')` in Node installs libuv's. When either
//! check fails, [`copy`] declines and the caller takes the syscall path.

use crate::slice::copy_len;
use crate::{sys, MemSlice, MemSliceMut};
use std::sync::OnceLock;

core::arch::global_asm!(
    ".pushsection .text.mr_guarded_copy,\"ax\",@progbits",
    ".p2align 4",
    ".globl mr_guarded_copy",
    ".hidden mr_guarded_copy",
    ".type mr_guarded_copy,@function",
    // usize mr_guarded_copy(dst: rdi, src: rsi, len: rdx, probe: rcx): the
    // number of bytes *not* copied — 0 when the whole copy was done, more when
    // a fault was fixed up. With `probe` non-zero, one byte of every page of
    // `[dst, dst + len)` is read first, so that a destination page that cannot
    // be faulted in fails the call before any byte is written. Copies like
    // memmove: backwards when dst lies inside [src, src + len). x86-64 pages
    // are 4096 bytes.
    "mr_guarded_copy:",
    "    mov r10, rcx",
    "    mov rcx, rdx",
    "    test r10, r10",
    "    jz 3f",
    "    test rdx, rdx",
    "    jz 3f",
    "    mov r8, rdi",
    "    lea r9, [rdi + rdx]",
    "4:",
    "    mov al, byte ptr [r8]",
    "    or r8, 4095",
    "    add r8, 1",
    "    cmp r8, r9",
    "    jb 4b",
    "3:",
    "    mov rax, rdi",
    "    sub rax, rsi",
    "    cmp rax, rdx",
    "    jb 2f",
    "    rep movsb",
    "    xor eax, eax",
    "    ret",
    "2:",
    "    lea rsi, [rsi + rdx - 1]",
    "    lea rdi, [rdi + rdx - 1]",
    "    std",
    "    rep movsb",
    "    cld",
    "    xor eax, eax",
    "    ret",
    // A fault inside the probe leaves rcx = len; inside `rep movsb`, rcx is
    // the count of bytes not yet copied (the faulting one included).
    ".globl mr_guarded_copy_fixup",
    ".hidden mr_guarded_copy_fixup",
    "mr_guarded_copy_fixup:",
    "    cld",
    "    mov rax, rcx",
    "    ret",
    ".size mr_guarded_copy, . - mr_guarded_copy",
    ".popsection",
);

extern "C" {
    fn mr_guarded_copy(dst: *mut u8, src: *const u8, len: usize, probe: usize) -> usize;
    static mr_guarded_copy_fixup: u8;
}

/// The start of the copy routine and of its fixup: a fault at an address in
/// `[start, fixup)` is the destination probe or one of the two `rep movsb`.
fn bounds() -> (usize, usize) {
    // Only the address of the label is taken; nothing is read.
    let fixup = std::ptr::addr_of!(mr_guarded_copy_fixup) as usize;
    (mr_guarded_copy as *const () as usize, fixup)
}

/// What was installed for `SIGBUS` before our handler: where foreign faults go.
/// Set before the handler is installed, read (an atomic load) inside it.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let (start, fixup) = bounds();
    let uc = context.cast::<libc::ucontext_t>();
    // Only a fault the copy itself caused: BUS_ADRALN, BUS_ADRERR, BUS_OBJERR or
    // BUS_MCEERR_AR (1..=4). A SIGBUS sent with kill() (si_code <= 0) or an
    // asynchronous memory-error notice (BUS_MCEERR_AO) that merely lands during
    // a copy is not ours to swallow.
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let synchronous = (1..=4).contains(&unsafe { (*info).si_code });
    // SAFETY: the kernel passes a valid ucontext_t for an SA_SIGINFO handler;
    // writing its RIP changes where the interrupted thread resumes.
    unsafe {
        let rip = &mut (*uc).uc_mcontext.gregs[libc::REG_RIP as usize];
        if synchronous && (*rip as usize) >= start && (*rip as usize) < fixup {
            *rip = fixup as libc::greg_t;
            return;
        }
    }
    // Not ours: behave as if we were never installed.
    match PREVIOUS.get().copied() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, context);
            } else {
                // SAFETY: a plain handler takes the signal number.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        prev => {
            let ignored = prev.is_some_and(|p| p.sa_sigaction == libc::SIG_IGN);
            if ignored && !synchronous {
                // A sent SIGBUS that the process ignored before us: ignore it.
                return;
            }
            // Default, or ignored for a fault (which the kernel turns into the
            // default): restore it. A fault then runs its instruction again; a
            // sent signal is raised again (held until this handler returns).
            // Either way the process ends as it would have without us.
            // Both calls are async-signal-safe.
            sys::set_sigbus_action(&sys::default_sigaction());
            if !synchronous {
                sys::raise(sig);
            }
        }
    }
}

/// Installs the handler once, process-wide; `false` when that failed.
fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let Some(old) = sys::sigbus_action() else {
            return false;
        };
        let _ = PREVIOUS.set(old);
        let mut new = sys::default_sigaction();
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // The handler only touches the ucontext, an atomic and async-signal-safe
        // calls; PREVIOUS is already set for it.
        sys::set_sigbus_action(&new)
    })
}

/// Whether a fault in the copy would reach our handler now, on this thread.
fn armed() -> bool {
    if !install() {
        return false;
    }
    sys::sigbus_action().is_some_and(|a| a.sa_sigaction == on_sigbus as *const () as usize)
        && sys::sigbus_blocked() == Some(false)
}

/// Copies `src` into `dst` (of the same length; like `memmove`) with a
/// `SIGBUS` turned into a return: `Some(0)` when copied, `Some(n)` with
/// `n > 0` bytes left uncopied when a page faulted, `None` when the guard is
/// not armed (the caller must take another path). With `probe_dst`, every
/// page of the destination is read before the first byte is written: a
/// destination page that is already gone fails with `Some(len)` and nothing
/// copied.
///
/// # Panics
/// If the lengths differ.
pub fn copy(dst: MemSliceMut<'_>, src: MemSlice<'_>, probe_dst: bool) -> Option<usize> {
    let len = copy_len(dst.len(), src.len());
    if !armed() {
        return None;
    }
    // Both slices are mapped with the access their types say (their
    // contracts; the guard only catches SIGBUS, not SIGSEGV); a vanished page
    // raises SIGBUS inside mr_guarded_copy, which our armed handler turns into
    // a return of the bytes left. The copy is assembly: no reference is formed.
    // SAFETY: as just said.
    Some(unsafe { mr_guarded_copy(dst.as_ptr(), src.as_ptr(), len, usize::from(probe_dst)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{in_child, unlinked_file};
    use std::os::fd::AsRawFd;

    /// [`copy`] over `len` bytes at `dst` and at `src`.
    ///
    /// # Safety
    /// Both ranges must be mapped with the access the copy needs (a page that
    /// vanished under a file mapping is what the guard catches).
    unsafe fn copy_raw(dst: *mut u8, src: *const u8, len: usize, probe: bool) -> Option<usize> {
        // SAFETY: guaranteed by the caller, for this call.
        let (d, s) = unsafe { (MemSliceMut::new(dst, len), MemSlice::new(src, len)) };
        copy(d, s, probe)
    }

    /// A one-page shared mapping of a file truncated to nothing: touching it is SIGBUS.
    fn vanished_page() -> (*mut u8, std::fs::File) {
        let ps = crate::page_size();
        let file = unlinked_file("guard", &vec![7u8; ps], true);
        // SAFETY: a fresh shared mapping of the whole (one-page) file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ps,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        file.set_len(0).unwrap();
        (p.cast(), file)
    }

    #[test]
    fn copies_like_memmove_and_turns_sigbus_into_a_failed_copy() {
        let mut buf: Vec<u8> = (0..64).collect();
        let base = buf.as_mut_ptr();
        // SAFETY: all ranges lie inside `buf`.
        unsafe {
            assert_eq!(copy_raw(base.add(8), base, 32, false), Some(0)); // dst after src: backwards
            assert_eq!(copy_raw(base, base.add(40), 16, false), Some(0)); // dst before src: forwards
            assert_eq!(copy_raw(base, base, 0, false), Some(0));
        }
        let mut want: Vec<u8> = (0..64).collect();
        want.copy_within(0..32, 8);
        want.copy_within(40..56, 0);
        assert_eq!(buf, want);

        let (page, _file) = vanished_page();
        let mut out = [0u8; 16];
        // All 16 bytes are left: the first byte faults. (valgrind's emulation of
        // `rep movsb` reports one fewer at the fault; there, only a fault counts.)
        let all_left = |left: Option<usize>| {
            if std::env::var_os("MR_UNDER_VALGRIND").is_some() {
                matches!(left, Some(1..=16))
            } else {
                left == Some(16)
            }
        };
        // SAFETY: the page is mapped; its file is gone, so reading it is SIGBUS,
        // which the guard catches.
        assert!(all_left(unsafe {
            copy_raw(out.as_mut_ptr(), page, 16, false)
        }));
        // SAFETY: as above, for writing.
        assert!(all_left(unsafe { copy_raw(page, out.as_ptr(), 16, false) }));
        // SAFETY: as above; the probe fails before the copy starts.
        assert_eq!(unsafe { copy_raw(page, out.as_ptr(), 16, true) }, Some(16));
        // The direction flag is clear again after a fault in a backward copy.
        // SAFETY: `page + 8` overlaps `page`: a backward copy, which faults.
        assert!(all_left(unsafe { copy_raw(page.add(8), page, 16, false) }));
        // SAFETY: inside `buf`; a forward copy would be wrong if DF were still set.
        unsafe { assert_eq!(copy_raw(base, base.add(1), 4, false), Some(0)) };
        assert_eq!(&buf[..4], &want[1..5]);
        // SAFETY: the mapping is ours.
        unsafe { libc::munmap(page.cast(), crate::page_size()) };
    }

    #[test]
    fn foreign_sigbus_still_reaches_the_previous_handler_and_the_default_action() {
        let (status, text) = in_child("guard::tests::child_chains_to_previous_handler");
        assert!(status.success(), "{text}");
        assert!(text.contains("previous handler saw SIGBUS"), "{text}");
        let (status, text) = in_child("guard::tests::child_default_action_kills");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{text}");
        assert!(text.contains("guard armed"), "{text}");
    }

    #[test]
    fn a_sent_sigbus_keeps_its_previous_meaning() {
        use std::os::unix::process::ExitStatusExt;
        let (status, text) = in_child("guard::tests::child_sent_sigbus_default");
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{text}");
        assert!(
            text.contains("guard armed") && !text.contains("still alive"),
            "{text}"
        );
        let (status, text) = in_child("guard::tests::child_sent_sigbus_ignored");
        assert!(status.success(), "{text}");
        assert!(text.contains("ignored twice"), "{text}");
    }

    #[test]
    #[ignore = "run in a child process by a_sent_sigbus_keeps_its_previous_meaning"]
    fn child_sent_sigbus_default() {
        // As in Node: nothing handles SIGBUS before us. (Rust's std installs a
        // stack-overflow handler that would otherwise be the previous one.)
        set_handler(libc::SIG_DFL, 0);
        arm();
        println!("guard armed");
        // SAFETY: sends SIGBUS to ourselves; its default action ends the process.
        unsafe { libc::raise(libc::SIGBUS) };
        println!("still alive: the guard swallowed a sent SIGBUS");
    }

    #[test]
    #[ignore = "run in a child process by a_sent_sigbus_keeps_its_previous_meaning"]
    fn child_sent_sigbus_ignored() {
        set_handler(libc::SIG_IGN, 0);
        arm();
        // SAFETY: sends SIGBUS to ourselves, twice: ignored before the guard, so after it.
        unsafe {
            libc::raise(libc::SIGBUS);
            libc::raise(libc::SIGBUS);
        }
        println!("ignored twice");
    }

    #[test]
    fn a_replaced_handler_or_a_blocked_sigbus_disarms_the_guard() {
        let (status, text) = in_child("guard::tests::child_disarmed");
        assert!(status.success(), "{text}");
        assert!(text.contains("disarmed twice"), "{text}");
    }

    #[test]
    fn only_a_synchronous_fault_inside_the_copy_is_fixed_up() {
        let (status, text) = in_child("guard::tests::child_handler_decisions");
        assert!(status.success(), "{text}");
        assert!(text.contains("decisions ok"), "{text}");
    }

    #[test]
    #[ignore = "run in a child process by only_a_synchronous_fault_inside_the_copy_is_fixed_up"]
    fn child_handler_decisions() {
        set_handler(previous as *const () as usize, libc::SA_SIGINFO);
        assert!(install());
        let (start, fixup) = bounds();
        // The handler, called as the kernel would, on a made-up context.
        let decide = |si_code: libc::c_int, rip: usize| -> (usize, bool) {
            PREVIOUS_SAW.store(false, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: zeroed siginfo_t and ucontext_t are valid values to fill in.
            let (mut info, mut uc): (libc::siginfo_t, libc::ucontext_t) =
                unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
            info.si_signo = libc::SIGBUS;
            info.si_code = si_code;
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = rip as libc::greg_t;
            on_sigbus(
                libc::SIGBUS,
                &mut info,
                (&mut uc as *mut libc::ucontext_t).cast(),
            );
            let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
            (rip, PREVIOUS_SAW.load(std::sync::atomic::Ordering::SeqCst))
        };
        const BUS_ADRERR: libc::c_int = 2;
        const BUS_MCEERR_AO: libc::c_int = 5;
        // A fault in the copy: resumed at the fixup, the previous handler not bothered.
        assert_eq!(decide(BUS_ADRERR, start + 3), (fixup, false));
        // The same address, but a SIGBUS from kill() or an asynchronous memory-error
        // notice: passed on untouched.
        assert_eq!(decide(0, start + 3), (start + 3, true));
        assert_eq!(decide(BUS_MCEERR_AO, start + 3), (start + 3, true));
        // A fault anywhere else: passed on.
        assert_eq!(decide(BUS_ADRERR, fixup), (fixup, true));
        assert_eq!(decide(BUS_ADRERR, start - 1), (start - 1, true));
        println!("decisions ok");
    }

    /// Installs the guard with a first (harmless) copy, and checks it is armed.
    fn arm() {
        let mut x = [0u8; 4];
        // SAFETY: inside `x`.
        let left = unsafe { copy_raw(x.as_mut_ptr(), x.as_ptr(), 4, false) };
        assert_eq!(left, Some(0));
    }

    static PREVIOUS_SAW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    extern "C" fn previous(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        PREVIOUS_SAW.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn set_handler(handler: usize, flags: libc::c_int) {
        // SAFETY: a zeroed sigaction with a handler and an empty mask is valid.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler;
            act.sa_flags = flags;
            libc::sigemptyset(&mut act.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()), 0);
        }
    }

    #[test]
    #[ignore = "run in a child process by foreign_sigbus_still_reaches_the_previous_handler_and_the_default_action"]
    fn child_chains_to_previous_handler() {
        set_handler(previous as *const () as usize, libc::SA_SIGINFO);
        let mut x = [0u8; 4];
        // SAFETY: inside `x`; installs the guard over our `previous` handler.
        let left = unsafe { copy_raw(x.as_mut_ptr(), x.as_ptr().add(1), 2, false) };
        assert_eq!(left, Some(0));
        // A SIGBUS outside the guarded copy is not ours: it goes to `previous`.
        // SAFETY: raising a signal at ourselves.
        unsafe { libc::raise(libc::SIGBUS) };
        assert!(PREVIOUS_SAW.load(std::sync::atomic::Ordering::SeqCst));
        println!("previous handler saw SIGBUS");
    }

    #[test]
    #[ignore = "run in a child process by foreign_sigbus_still_reaches_the_previous_handler_and_the_default_action"]
    fn child_default_action_kills() {
        set_handler(libc::SIG_DFL, 0); // as in Node; see child_sent_sigbus_default
        arm();
        println!("guard armed");
        let (page, _file) = vanished_page();
        // A fault outside the guarded copy must still end the process with SIGBUS.
        // SAFETY: deliberately touches the vanished page.
        unsafe { std::ptr::read_volatile(page) };
        println!("still alive: the guard swallowed a foreign SIGBUS");
    }

    #[test]
    #[ignore = "run in a child process by a_replaced_handler_or_a_blocked_sigbus_disarms_the_guard"]
    fn child_disarmed() {
        arm();
        let mut x = [0u8; 4];
        // Someone installs their own handler (as process.on('SIGBUS') does).
        set_handler(previous as *const () as usize, libc::SA_SIGINFO);
        let x = MemSliceMut::from(&mut x);
        assert_eq!(copy(x, x.as_const(), false), None);
        // Our handler back, but SIGBUS blocked in this thread.
        set_handler(
            on_sigbus as *const () as usize,
            libc::SA_SIGINFO | libc::SA_ONSTACK,
        );
        // SAFETY: a sigset we own, blocking SIGBUS for this thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGBUS);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        assert_eq!(copy(x, x.as_const(), false), None);
        println!("disarmed twice");
    }
}
