using UVm.Interop;

namespace UVm.Faults;

/// <summary>
/// The one resolution loop of fallible accesses. After an access faulted, it puts the fault in
/// guest terms, has the space resolve it (<see cref="IFaultResolver.Resolve"/>) and retries the
/// access from where it stopped, again after every fault, until the access is done or a fault
/// stays unresolved. Copies, fills, loads, stores and compare-exchanges all come here.
/// </summary>
/// <remarks>
/// A resolution that claims success but leaves the access failing is believed at most
/// <see cref="MaxRetriesWithoutProgress"/> times in a row for one access, wherever it faults (a
/// handler that maps one page by unmapping another cannot make an access spin); the access then
/// gives up and reports the last fault as the space classified it. Every byte the access moves
/// starts the count again. A fault outside the space's arena (in library memory, say) is given
/// up on at once. Either way the space counts the fault as unresolved
/// (<see cref="IFaultResolver.GiveUp"/>).
/// </remarks>
internal static unsafe class FaultResolution
{
    /// <summary>Resolutions believed for one access in a row without it moving a byte further, before it fails as a fault.</summary>
    internal const int MaxRetriesWithoutProgress = 4;

    /// <summary>
    /// Resolves <paramref name="fault"/>, the fault <paramref name="op"/> just took, and retries
    /// the op until it is done (true) or a fault stays unresolved (false, that fault in
    /// <paramref name="unresolved"/>); <see cref="IFallibleOp.Done"/> then says how far it got.
    /// The caller is inside the space's gate, which was open when it entered.
    /// </summary>
    /// <exception cref="Exception">Whatever the space's page-fault handler throws.</exception>
    internal static bool Retry<TOp>(ref TOp op, IFaultResolver resolver, NativeFault fault, out PageFaultInfo unresolved)
        where TOp : struct, IFallibleOp
    {
        ulong progress = op.Done;
        int believed = 0;              // resolutions believed since the op last moved
        PageFaultInfo last = default;  // the previous fault, as the space classified it
        while (true)
        {
            if (believed == MaxRetriesWithoutProgress)
            {
                // Faults again and again after "resolved", at whatever addresses: report the last
                // as the space classified it (not a guess), and count it as unresolved.
                resolver.GiveUp(last);
                unresolved = last;
                return false;
            }
            last = InGuestTerms(fault, resolver);
            if (last.Kind == PageFaultKind.OutOfRange)
            {
                resolver.GiveUp(last);
                unresolved = last;
                return false;
            }
            believed++;
            if (!resolver.Resolve(ref last))
            {
                unresolved = last;
                return false;
            }
            // SAFETY: the op's memory is its maker's to prove (see IFallibleOp), and the caller
            // is inside the space's gate, entered while it was open; `fault` is a local.
            if (op.Try(&fault))
            {
                unresolved = default;
                return true;
            }
            if (op.Done != progress)
            {
                progress = op.Done;
                believed = 0;
            }
        }
    }

    /// <summary>
    /// The fault as a page-fault handler sees it: at a guest address, not yet classified by the
    /// page table (absent, or a bus error); <see cref="PageFaultKind.OutOfRange"/> at the host
    /// address when it is outside the space's arena.
    /// </summary>
    private static PageFaultInfo InGuestTerms(in NativeFault fault, IFaultResolver resolver)
    {
        ulong host = fault.Addr, start = (ulong)resolver.HostBase;
        var access = (PageFaultAccess)fault.Access;
        if (host < start || host - start >= resolver.Size) return new PageFaultInfo(host, access, PageFaultKind.OutOfRange, fault.Signo);
        return new PageFaultInfo(host - start, access, fault.Signo == NativeFaults.SIGBUS ? PageFaultKind.BusError : PageFaultKind.NotPresent, fault.Signo);
    }
}
