using UVm.Faults;
using UVm.Io;

namespace UVm.Spaces;

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
/// <see cref="FallibleIo.MaxRetriesWithoutProgress"/> times in a row for one access; then the
/// access fails as a fault.</para>
/// <para><b>Exceptions.</b> An exception thrown by the handler propagates out of the access that
/// faulted (the fallible copy, value access or <see cref="VmSpace.HandlePageFault(ulong, PageFaultAccess)"/>) to its
/// caller, and the fault counts as unresolved; UVm's own state (page table, frames, host) stays
/// consistent, as the handler left it. An <see cref="ObjectDisposedException"/> thrown because the
/// space was disposed meanwhile is not propagated: the access fails as a fault.</para>
/// </remarks>
public delegate bool PageFaultHandler(VmSpace space, in PageFaultInfo info);
