using UVm.Spaces;

namespace UVm.Faults;

/// <summary>The access that faulted.</summary>
public enum PageFaultAccess
{
    /// <summary>A read.</summary>
    Read = 0,
    /// <summary>A write.</summary>
    Write = 1,
    /// <summary>An instruction fetch.</summary>
    Execute = 2,
}

/// <summary>Why the access faulted, according to the page table.</summary>
public enum PageFaultKind
{
    /// <summary>Nothing is mapped at the address.</summary>
    NotPresent,
    /// <summary>A page is mapped but its rights forbid the access.</summary>
    Protection,
    /// <summary>The backing memory is gone (SIGBUS: e.g. the file behind I/O memory was truncated).</summary>
    BusError,
    /// <summary>The address is not in the guest's user space (or the fault hit library memory).</summary>
    OutOfRange,
}

/// <summary>A page fault as UVm hands it to a page-fault handler, and reports it when unresolved.</summary>
/// <param name="Address">Guest virtual address of the first byte that faulted; when <see cref="Kind"/> is
/// <see cref="PageFaultKind.OutOfRange"/> because the fault hit memory outside the arena (library memory), the host address.</param>
/// <param name="Access">The access that faulted.</param>
/// <param name="Kind">Why, according to the page table at the time of the fault.</param>
/// <param name="Signal">The host signal: 11 (SIGSEGV) or 7 (SIGBUS).</param>
public readonly record struct PageFaultInfo(ulong Address, PageFaultAccess Access, PageFaultKind Kind, int Signal)
{
    /// <summary>Whether the host reported a bus error (SIGBUS) rather than a segmentation fault.</summary>
    public bool IsBusError => Signal == NativeFaults.SIGBUS;
}

/// <summary>
/// Resolves a page fault of <paramref name="space"/>: returns true when it changed the space
/// so that the access can succeed (the faulting access is then retried), false to let it fail.
/// Runs in ordinary managed context on the faulting thread, never in a signal handler; it may
/// create cursors and map frames. It is not called for faults UVm resolves itself (an entry
/// that already allows the access but is not yet on the host).
/// </summary>
/// <remarks>
/// <para><b>Concurrency.</b> Handler calls of one space run one at a time per 2 MiB region:
/// a fault in a region whose handler is running waits for it, then usually finds its page
/// resolved (no second call). Calls for different regions, or spaces, run in parallel, so a
/// handler must be thread-safe. The handler may block, take cursors, and dispose the space (the
/// access then fails with <see cref="UVmError.PageFault"/>, never touching the arena again;
/// disposing also releases every fault waiting for a region). The one rule: a handler must not
/// wait for another thread's access that faults in the same region of the same space (it would
/// wait for itself); no other UVm lock is held while it runs.</para>
/// <para><b>Nesting.</b> Resolution is not re-entrant for one thread and space: a fault the
/// handler itself takes in <paramref name="space"/> (through a fallible access, or
/// <see cref="VmSpace.HandlePageFault(ulong, PageFaultAccess)"/>) is not resolved; that access fails with the exact count
/// (or <c>HandlePageFault</c> returns false). Touching another space resolves normally.</para>
/// <para><b>Retries.</b> A true that does not make the access possible is believed at most
/// <see cref="Io.FallibleIo.MaxRetriesWithoutProgress"/> times in a row for one access; then the
/// access fails as a fault.</para>
/// <para><b>Exceptions.</b> An exception thrown by the handler propagates out of the access that
/// faulted (the fallible copy, value access or <see cref="VmSpace.HandlePageFault(ulong, PageFaultAccess)"/>) to its
/// caller, and the fault counts as unresolved; UVm's own state (page table, frames, host) stays
/// consistent, as the handler left it. An <see cref="ObjectDisposedException"/> thrown because the
/// space was disposed meanwhile is not propagated: the access fails as a fault.</para>
/// </remarks>
public delegate bool PageFaultHandler(VmSpace space, in PageFaultInfo info);

/// <summary>The one place that says which right an access needs.</summary>
internal static class FaultRights
{
    /// <summary>The right <paramref name="access"/> needs: W for a write, X for an instruction fetch, R for a read.</summary>
    internal static PageFlags Needed(PageFaultAccess access) => access switch
    {
        PageFaultAccess.Write => PageFlags.W,
        PageFaultAccess.Execute => PageFlags.X,
        _ => PageFlags.R,
    };
}
