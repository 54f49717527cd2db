using UVm.Frames;
using UVm.Interop;

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

    /// <summary>Releases one reference on the frame at <paramref name="paddr"/> after the next dispatch (whose operations cover its removal).</summary>
    internal void ReleaseAfterDispatch(ulong paddr) => _release.Add(paddr);

    /// <summary>
    /// Forgets the pending operations, for a caller that restored the page table they mirror.
    /// Only for flushers without pending releases (a release must follow its flush).
    /// </summary>
    internal void Discard()
    {
        System.Diagnostics.Debug.Assert(_release.Count == 0 && Journal == null);
        PublishOpCounts();
        _ops.Clear();
    }

    /// <summary>
    /// Forgets the pending operations and releases, none of which reached the host: for a cursor
    /// that took back every change of its batch before dispatching it (the frames waiting for
    /// release are back in its table).
    /// </summary>
    internal void ForgetBatch()
    {
        _mapOps = _unmapOps = _protectOps = 0;
        _ops.Clear();
        _release.Clear();
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
    /// <remarks>
    /// All or nothing for the page table. When the host refuses an operation, the flusher of a
    /// cursor undoes every page-table change the cursor made since its previous dispatch (the
    /// mappings it made drop their frames, the frames it replaced or unmapped are mapped again)
    /// and puts the host ranges it had already changed back as they were; a flusher
    /// without a cursor (a fault's refill, a fork) keeps the table and puts the ranges it had not
    /// yet applied back to <c>PROT_NONE</c>. Either way the host never grants more than the
    /// table, nor maps a frame the table does not; a later access faults and is refilled from
    /// the table.
    /// </remarks>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>
    /// when the host refuses; nothing is pending afterwards.</exception>
    public void DispatchTlbFlush()
    {
        PublishOpCounts();
        if (_ops.Count == 0 && _release.Count == 0)
        {
            Journal?.Commit();
            return;
        }
        if (Journal != null && _ops.Count > 0)
        {
            try
            {
                Journal.Preserve(_ops);
            }
            catch (Exception refusal) when (refusal is UVmException or InvalidOperationException)
            {
                // Nothing of the batch reached the host: the table goes back, and so do the rights
                // the journal took away to read the host copies under the batch.
                Journal.Undo([]);
                Journal.Refilled();
                ForgetBatch();
                throw;
            }
        }
        int done = 0;
        try
        {
            for (; done < _ops.Count; done++) Apply(_ops[done]);
        }
        catch (Exception refusal) when (refusal is UVmException or InvalidOperationException)
        {
            RecoverFrom(done);
            throw;
        }
        _budget.Applied(done);
        _ops.Clear();
        Journal?.Commit();
        if (done > 0) _stats.CountDispatch();
        ReleasePending();
    }

    /// <summary>
    /// The undo journal of the cursor that owns this flusher, if any: committed after every
    /// dispatch, undone when the host refuses one.
    /// </summary>
    internal IFlushJournal? Journal { get; set; }

    /// <summary>After the host refused operation <paramref name="failed"/>: make the host no more permissive than the table, then forget the batch.</summary>
    private void RecoverFrom(int failed)
    {
        // With a journal the table goes back to before the batch: the ranges the batch changed on
        // the host (the failed one perhaps half) are reset, then refilled from the restored table.
        // Without one the table stays: the ranges not yet applied are reset (refilled by faults).
        int from = Journal != null ? 0 : failed, to = Journal != null ? failed + 1 : _ops.Count;
        List<TlbFlushOp> reset = _ops.GetRange(from, to - from);
        _ops.Clear();
        bool consistent = true;
        foreach (TlbFlushOp op in reset) consistent &= TryReset(op);
        int applied = to;
        if (consistent && Journal != null)
        {
            // The replaced and unmapped frames are back in the table: their releases are void.
            _release.Clear();
            List<TlbFlushOp> refill = Journal.Undo(reset);
            foreach (TlbFlushOp op in refill)
            {
                applied++;
                try
                {
                    Apply(op);
                }
                catch (Exception e) when (e is UVmException or InvalidOperationException)
                {
                    consistent &= TryReset(op); // refused again: left to be refilled by a fault
                    applied++;
                }
            }
            if (consistent) Journal.Refilled();
        }
        _budget.Applied(applied);
        if (!consistent)
        {
            // Some range may still map a frame the table is giving up: keep every frame (a leak,
            // never a frame reachable from two places) and say the space is broken.
            _release.Clear();
            Journal?.Commit();
            throw new InvalidOperationException("the host refused to reset a range it had refused to update; the space's host mappings may be inconsistent");
        }
        ReleasePending();
    }

    /// <summary>Puts the host range of <paramref name="op"/> back to the reserved state; false when the host refused that too.</summary>
    private bool TryReset(in TlbFlushOp op)
    {
        nint addr = _arena.Base + (nint)op.Va;
        _stats.CountMmap();
        nint r = Libc.Mmap(addr, (nuint)op.Length, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0);
        if (r != Libc.MAP_FAILED) return true;
        // At least take every right away (mprotect never needs memory for a range it does not split).
        Libc.Mprotect(addr, (nuint)op.Length, Libc.PROT_NONE);
        return false;
    }

    private void ReleasePending()
    {
        if (_release.Count == 0) return;
        _pool.ReleaseMany(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_release));
        _release.Clear();
    }

    private void Apply(in TlbFlushOp op)
    {
        nint addr = _arena.Base + (nint)op.Va;
        switch (op.Kind)
        {
            case TlbFlushOpKind.Map:
                _stats.CountMmap();
                HostCall.CheckMap(Libc.Mmap(addr, (nuint)op.Length, op.Prot,
                    (op.HostCopy ? Libc.MAP_PRIVATE : Libc.MAP_SHARED) | Libc.MAP_FIXED | (op.Populate ? Libc.MAP_POPULATE : 0), op.Fd, (long)op.Offset), "mmap of frames");
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

/// <summary>
/// The page-table side of a flusher's batch: the changes its cursor made since the previous
/// dispatch, kept so a refused dispatch leaves the table as it was.
/// </summary>
internal interface IFlushJournal
{
    /// <summary>
    /// The batch <paramref name="batch"/> is about to reach the host: keep what it may destroy
    /// that the table cannot give back if it is refused (the contents of host copies).
    /// Throwing refuses the batch before any of it reaches the host.
    /// </summary>
    void Preserve(List<TlbFlushOp> batch);

    /// <summary>A refused batch's ranges were refilled from the restored table (or <see cref="Preserve"/> refused it): put back what <see cref="Preserve"/> kept and took.</summary>
    void Refilled();

    /// <summary>The batch reached the host: forget it.</summary>
    void Commit();

    /// <summary>
    /// The host refused the batch: undo its page-table changes, drop the frames they mapped, and
    /// return the host updates that map again what the restored table has in <paramref name="reset"/>
    /// (ranges the flusher put back to the reserved state).
    /// </summary>
    List<TlbFlushOp> Undo(List<TlbFlushOp> reset);
}
