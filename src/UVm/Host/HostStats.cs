namespace UVm.Host;

/// <summary>Counts of the host-MMU work one space has caused. Thread-safe; values only grow.</summary>
public sealed class HostStats
{
    private long _mmapCalls, _mprotectCalls, _mapOps, _unmapOps, _protectOps, _dispatches;

    /// <summary><c>mmap</c> calls made (both installing frames and returning ranges to <c>PROT_NONE</c>).</summary>
    public long MmapCalls => Volatile.Read(ref _mmapCalls);

    /// <summary><c>mprotect</c> calls made.</summary>
    public long MprotectCalls => Volatile.Read(ref _mprotectCalls);

    /// <summary>All host syscalls that changed the arena (<see cref="MmapCalls"/> + <see cref="MprotectCalls"/>).</summary>
    public long Syscalls => MmapCalls + MprotectCalls;

    /// <summary>Page-table changes queued as host map operations, before coalescing; counted when their flusher dispatches.</summary>
    public long MapOps => Volatile.Read(ref _mapOps);

    /// <summary>Page-table changes queued as host unmap operations, before coalescing; counted when their flusher dispatches.</summary>
    public long UnmapOps => Volatile.Read(ref _unmapOps);

    /// <summary>Page-table changes queued as host protect operations, before coalescing; counted when their flusher dispatches.</summary>
    public long ProtectOps => Volatile.Read(ref _protectOps);

    /// <summary>Dispatches that applied at least one operation.</summary>
    public long Dispatches => Volatile.Read(ref _dispatches);

    internal void CountMmap() => Interlocked.Increment(ref _mmapCalls);
    internal void CountMprotect() => Interlocked.Increment(ref _mprotectCalls);
    internal void CountDispatch() => Interlocked.Increment(ref _dispatches);

    internal void CountOps(long map, long unmap, long protect)
    {
        if (map != 0) Interlocked.Add(ref _mapOps, map);
        if (unmap != 0) Interlocked.Add(ref _unmapOps, unmap);
        if (protect != 0) Interlocked.Add(ref _protectOps, protect);
    }
}
