namespace UVm.Areas;

/// <summary>What the default page-fault handler of an <see cref="AddressSpace"/> has done. Values only grow.</summary>
public sealed class AreaStats
{
    internal long _demandZero, _demandZeroPages, _cowCopies, _cowPages, _cowTakeovers, _cowTakeoverPages, _sharedWriteRestores, _refused, _onDemandFills, _onDemandDeclined, _guardFaults;

    /// <summary>Faults resolved by allocating zeroed frames (each may fill a fault-around window).</summary>
    public long DemandZeroFaults => Volatile.Read(ref _demandZero);

    /// <summary>Pages given zeroed frames by demand-zero faults (fault-around included).</summary>
    public long DemandZeroPages => Volatile.Read(ref _demandZeroPages);

    /// <summary>Write faults on shared private pages resolved by copying the frame.</summary>
    public long CopyOnWriteCopies => Volatile.Read(ref _cowCopies);

    /// <summary>Pages given a copy of their frame by copy-on-write faults: each fault's page and the shared pages copied in its fault-around window.</summary>
    public long CopyOnWritePages => Volatile.Read(ref _cowPages);

    /// <summary>Write faults on private pages resolved by taking the frame over (last reference): write access back, no copy.</summary>
    public long CopyOnWriteTakeovers => Volatile.Read(ref _cowTakeovers);

    /// <summary>Pages given write access back by copy-on-write faults because they held their frame's last reference: each fault's page and those of its fault-around window.</summary>
    public long CopyOnWriteTakeoverPages => Volatile.Read(ref _cowTakeoverPages);

    /// <summary>
    /// Faults on mapped pages resolved by giving back rights their area allows, such as write
    /// access to a shared (linear) page that a fork write-protected. A private page never gets W
    /// this way (it goes through copy-on-write).
    /// </summary>
    /// <remarks>The same counter as the <c>rights_restored</c> kind of <see cref="Diagnostics.PageFaultCounts"/>, under another public name; <see cref="Diagnostics.PageFaultCounts"/> says how the two counts differ.</remarks>
    public long SharedWriteRestores => Volatile.Read(ref _sharedWriteRestores);

    /// <summary>Faults the handler refused (no area, or the area's rights forbid the access). Guard and declined on-demand faults are counted on their own.</summary>
    public long Refused => Volatile.Read(ref _refused);

    /// <summary>Pages of on-demand areas filled by their callback and mapped.</summary>
    public long OnDemandFills => Volatile.Read(ref _onDemandFills);

    /// <summary>Faults in on-demand areas whose callback declined (returned false): each failed its access.</summary>
    public long OnDemandDeclined => Volatile.Read(ref _onDemandDeclined);

    /// <summary>Faults in guard areas (each failed its access, reported as <see cref="Faults.PageFaultKind.Guard"/>).</summary>
    public long GuardFaults => Volatile.Read(ref _guardFaults);
}
