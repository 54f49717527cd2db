using UVm.Areas;
using UVm.Spaces;

namespace UVm.Diagnostics;

/// <summary>
/// Page faults that reached UVm's resolution, by how they ended. Every fault is counted under
/// exactly one kind, so <see cref="Total"/> is the number of faults resolved or refused. These
/// are the values of the <c>kind</c> tag of <see cref="UVmMetrics.PageFaults"/>.
/// </summary>
/// <param name="DemandZero">Resolved by an <see cref="AddressSpace"/> allocating zeroed frames (one per fault, whatever the fault-around window filled).</param>
/// <param name="CopyOnWrite">Write faults on a private page after a fork, resolved by an <see cref="AddressSpace"/> copying the frame or taking it over.</param>
/// <param name="RightsRestored">Resolved by an <see cref="AddressSpace"/> giving a mapped page back rights its area allows (a shared page's write access, rights restored after <see cref="AddressSpace.Protect"/>, a linear page mapped again). The same counter as <see cref="AreaStats.SharedWriteRestores"/> (see the remarks).</param>
/// <param name="UserHandler">Resolved by a page-fault handler the user registered with <see cref="VmSpace.RegisterPageFaultHandler"/>.</param>
/// <param name="Spurious">Resolved by re-installing a host mapping the page table already allowed (lazy host mirroring).</param>
/// <param name="Unresolved">Not resolved: reported as <see cref="UVmError.PageFault"/>.</param>
/// <remarks>
/// One counter, two public names: <see cref="RightsRestored"/> (kind <c>rights_restored</c>) is
/// what an <see cref="AddressSpace"/>'s own statistics call <see cref="AreaStats.SharedWriteRestores"/>;
/// both names are public and stay. They count the same faults but are not always equal:
/// <see cref="RightsRestored"/> is derived from the space's handled faults minus demand-zero and
/// copy-on-write faults, so it also takes in the two other faults the handler resolves without
/// a kind of its own (a linear page mapped again after it was unmapped through the space
/// directly, and a copy-on-write fault whose page another thread had made writable first), which
/// <see cref="AreaStats.SharedWriteRestores"/> leaves out.
/// </remarks>
public readonly record struct PageFaultCounts(long DemandZero, long CopyOnWrite, long RightsRestored, long UserHandler, long Spurious, long Unresolved)
{
    /// <summary>Tag value of <see cref="DemandZero"/>.</summary>
    public const string DemandZeroKind = "demand_zero";

    /// <summary>Tag value of <see cref="CopyOnWrite"/>.</summary>
    public const string CopyOnWriteKind = "copy_on_write";

    /// <summary>Tag value of <see cref="RightsRestored"/>.</summary>
    public const string RightsRestoredKind = "rights_restored";

    /// <summary>Tag value of <see cref="UserHandler"/>.</summary>
    public const string UserHandlerKind = "user_handler";

    /// <summary>Tag value of <see cref="Spurious"/>.</summary>
    public const string SpuriousKind = "spurious";

    /// <summary>Tag value of <see cref="Unresolved"/>.</summary>
    public const string UnresolvedKind = "unresolved";

    /// <summary>Every fault counted, of every kind.</summary>
    public long Total => DemandZero + CopyOnWrite + RightsRestored + UserHandler + Spurious + Unresolved;

    /// <summary>The counts of <paramref name="space"/> since it was created (an <see cref="AddressSpace"/>'s space included).</summary>
    public static PageFaultCounts Of(VmSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        return Of(space, LiveObjects.AreasOf(space));
    }

    /// <summary>The counts of <paramref name="space"/>, whose handler is counted by <paramref name="areas"/> when it belongs to an address space.</summary>
    internal static PageFaultCounts Of(VmSpace space, AreaStats? areas)
    {
        long spurious = space.SpuriousFaults, handled = space.HandledFaults, unresolved = space.UnresolvedFaults;
        if (areas is null) return new PageFaultCounts(0, 0, 0, handled, spurious, unresolved);
        long demandZero = areas.DemandZeroFaults;
        long copyOnWrite = areas.CopyOnWriteCopies + areas.CopyOnWriteTakeovers;
        // The areas layer counts a fault before the space counts it as handled: while one is in
        // flight the difference can be one short, never more than the faults in flight.
        long rightsRestored = Math.Max(0, handled - demandZero - copyOnWrite);
        return new PageFaultCounts(demandZero, copyOnWrite, rightsRestored, 0, spurious, unresolved);
    }

    /// <summary>The kinds with their tag values, in a fixed order.</summary>
    public IEnumerable<(string Kind, long Count)> ByKind()
    {
        yield return (DemandZeroKind, DemandZero);
        yield return (CopyOnWriteKind, CopyOnWrite);
        yield return (RightsRestoredKind, RightsRestored);
        yield return (UserHandlerKind, UserHandler);
        yield return (SpuriousKind, Spurious);
        yield return (UnresolvedKind, Unresolved);
    }

    /// <summary>Kind by kind sum.</summary>
    public static PageFaultCounts operator +(PageFaultCounts a, PageFaultCounts b) => new(
        a.DemandZero + b.DemandZero, a.CopyOnWrite + b.CopyOnWrite, a.RightsRestored + b.RightsRestored,
        a.UserHandler + b.UserHandler, a.Spurious + b.Spurious, a.Unresolved + b.Unresolved);

    /// <inheritdoc/>
    public override string ToString() =>
        $"demand-zero {DemandZero}, copy-on-write {CopyOnWrite}, rights-restored {RightsRestored}, user-handler {UserHandler}, spurious {Spurious}, unresolved {Unresolved}";
}
