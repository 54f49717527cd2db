namespace UVm.Areas;

/// <summary>What the default page-fault handler of an <see cref="AddressSpace"/> has done. Values only grow.</summary>
public sealed class AreaStats
{
    internal long _demandZero, _demandZeroPages, _cowCopies, _cowTakeovers, _sharedWrites, _refused;

    /// <summary>Faults resolved by allocating zeroed frames (each may fill a fault-around window).</summary>
    public long DemandZeroFaults => Interlocked.Read(ref _demandZero);

    /// <summary>Pages given zeroed frames by demand-zero faults (fault-around included).</summary>
    public long DemandZeroPages => Interlocked.Read(ref _demandZeroPages);

    /// <summary>Write faults on shared private pages resolved by copying the frame.</summary>
    public long CopyOnWriteCopies => Interlocked.Read(ref _cowCopies);

    /// <summary>Write faults on private pages resolved by taking the frame over (last reference).</summary>
    public long CopyOnWriteTakeovers => Interlocked.Read(ref _cowTakeovers);

    /// <summary>Write faults on shared (linear) pages resolved by restoring write access.</summary>
    public long SharedWriteRestores => Interlocked.Read(ref _sharedWrites);

    /// <summary>Faults the handler refused (no area, or the area's rights forbid the access).</summary>
    public long Refused => Interlocked.Read(ref _refused);
}
