using UVm.Frames;

namespace UVm.Host;

/// <summary>
/// Batches host-MMU updates like TLB shootdowns. Page-table changes queue operations; until
/// <see cref="DispatchTlbFlush"/> the host may still show the old frame or wider rights, as a
/// stale TLB would. A frame that left the page table is released only after the dispatch that
/// removes it from the host, so no guest access can reach a frame that was reused elsewhere.
/// </summary>
/// <remarks>
/// Each cursor owns one flusher; it is not thread-safe. Consecutive operations that continue
/// each other are merged, so a run contiguous in guest address and in the backing file, with
/// one protection, costs one syscall.
/// </remarks>
public sealed class TlbFlusher
{
    private readonly HostArena _arena;
    private readonly FramePool _pool;
    private readonly HostStats _stats;
    private readonly HostMappingBudget _budget;
    private readonly List<TlbFlushOp> _ops = new();
    private readonly List<ulong> _release = new();
    private long _mapOps, _unmapOps, _protectOps; // queued since the last dispatch, added to the space's stats then

    internal TlbFlusher(HostArena arena, FramePool pool, HostStats stats, HostMappingBudget budget)
    {
        _arena = arena;
        _pool = pool;
        _stats = stats;
        _budget = budget;
    }

    /// <summary>
    /// Call before changing the page table: throws <see cref="UVmException"/>
    /// (<see cref="UVmError.HostMappingLimit"/>) if one more host operation might not fit the
    /// space's mapping budget, so a refusal leaves table and host unchanged.
    /// </summary>
    internal void EnsureRoomForOneMore() => _budget.EnsureRoom(_ops.Count);

    /// <summary>Whether one more operation fits the budget without counting the host's mappings.</summary>
    internal bool SurelyHasRoomForOneMore() => _budget.SurelyFits(_ops.Count);

    /// <summary>
    /// Call before unmapping: throws <see cref="UVmException"/> (<see cref="UVmError.HostMappingLimit"/>)
    /// unless resetting guest range <c>[start, end)</c> to <c>PROT_NONE</c> fits the budget, counted exactly.
    /// </summary>
    internal void EnsureRoomToReset(ulong start, ulong end) => _budget.EnsureRoomToReset(start, end, _ops.Count);

    /// <summary>Operations waiting for dispatch (after merging).</summary>
    public int PendingOps => _ops.Count;

    /// <summary>Frame references waiting for dispatch to be released.</summary>
    public int PendingReleases => _release.Count;

    /// <summary>The operations waiting for dispatch, in order.</summary>
    public IReadOnlyList<TlbFlushOp> Pending => _ops;

    internal void IssueTlbFlush(in TlbFlushOp op)
    {
        // Counted here and published at dispatch: cursors of one space on other threads never
        // share a cache line per page.
        switch (op.Kind)
        {
            case TlbFlushOpKind.Map: _mapOps++; break;
            case TlbFlushOpKind.Unmap: _unmapOps++; break;
            default: _protectOps++; break;
        }
        int last = _ops.Count - 1;
        if (last >= 0 && _ops[last].TryExtend(op, out TlbFlushOp merged)) _ops[last] = merged;
        else _ops.Add(op);
    }

    /// <summary>Queues <paramref name="op"/> and the release of one reference on the frame at <paramref name="paddr"/> after it is applied.</summary>
    internal void IssueTlbFlushWith(in TlbFlushOp op, ulong paddr)
    {
        IssueTlbFlush(op);
        _release.Add(paddr);
    }

    /// <summary>
    /// Forgets the pending operations, for a caller that restored the page table they mirror.
    /// Only for flushers without pending releases (a release must follow its flush).
    /// </summary>
    internal void Discard()
    {
        System.Diagnostics.Debug.Assert(_release.Count == 0);
        PublishOpCounts();
        _ops.Clear();
    }

    private void PublishOpCounts()
    {
        if ((_mapOps | _unmapOps | _protectOps) == 0) return;
        _stats.CountOps(_mapOps, _unmapOps, _protectOps);
        _mapOps = _unmapOps = _protectOps = 0;
    }

    /// <summary>
    /// Applies every pending operation to the host in order, then releases the frames that
    /// were waiting for it.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> when the host refuses; the
    /// operations not yet applied stay pending and no frame is released.</exception>
    public void DispatchTlbFlush()
    {
        PublishOpCounts();
        if (_ops.Count == 0 && _release.Count == 0) return;
        int done = 0;
        try
        {
            for (; done < _ops.Count; done++) Apply(_ops[done]);
        }
        finally
        {
            _ops.RemoveRange(0, done);
            _budget.Applied(done);
        }
        if (done > 0) _stats.CountDispatch();
        if (_release.Count > 0)
        {
            _pool.ReleaseMany(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_release));
            _release.Clear();
        }
    }

    private void Apply(in TlbFlushOp op)
    {
        nint addr = _arena.Base + (nint)op.Va;
        switch (op.Kind)
        {
            case TlbFlushOpKind.Map:
                _stats.CountMmap();
                HostCall.CheckMap(Libc.Mmap(addr, (nuint)op.Length, op.Prot,
                    Libc.MAP_SHARED | Libc.MAP_FIXED | (op.Populate ? Libc.MAP_POPULATE : 0), op.Fd, (long)op.Offset), "mmap of frames");
                break;
            case TlbFlushOpKind.Unmap:
                _stats.CountMmap();
                HostCall.CheckMap(Libc.Mmap(addr, (nuint)op.Length, Libc.PROT_NONE,
                    Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0), "mmap back to PROT_NONE");
                break;
            default:
                _stats.CountMprotect();
                HostCall.Check(Libc.Mprotect(addr, (nuint)op.Length, op.Prot), "mprotect");
                break;
        }
    }
}
