using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>Copy-on-write fork of a space.</summary>
public sealed partial class VmSpace
{
    /// <summary>
    /// Creates a child space with the same mappings: every tracked frame is shared by both
    /// spaces and mapped read-only in both (no page data is copied); I/O memory is shared as it
    /// is. The child inherits the page-fault handler, which decides what a write to a shared
    /// page does (the areas layer copies the frame, or takes it over when it is the last
    /// reference). Host mappings are installed in the child at once, one syscall per run, and
    /// the parent's writable runs are write-protected before this returns.
    /// </summary>
    /// <remarks>Waits for live cursors of other threads; must not be called while the calling
    /// thread holds a cursor of this space.</remarks>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/> when the child's (or the
    /// parent's) host mappings would pass the budget; the parent is left exactly as it was.
    /// <see cref="UVmError.HostNoMemory"/> when the host refuses the child's arena.</exception>
    public VmSpace ForkCopyOnWrite()
    {
        ThrowIfDisposed();
        DissolveHostCopies(stop: false); // the child shares frames, so every page's contents must be in one
        var child = new VmSpace(SameShape());
        child._pageFaultHandler = Volatile.Read(ref _pageFaultHandler);
        CopyTableOnWrite(child._pt, child, child.KeepIoMem, copied: null, halfMade: child, hostCopyAt: null);
        return child;
    }

    /// <summary>
    /// The one copy-on-write copy of this space's table, for a fork and for a snapshot: locks the
    /// whole table, hands every I/O region to <paramref name="keepIoMem"/>, copies the tree into
    /// <paramref name="copy"/> (frames shared, write access removed from tracked leaves here, or
    /// writable leaves of the pages <paramref name="hostCopyAt"/> accepts made host copies), mirrors this space's
    /// host and the <paramref name="child"/>'s if there is one, and calls <paramref name="copied"/>
    /// while the table is still held. The space holds no host copy (they were dissolved).
    /// </summary>
    /// <remarks>
    /// Refused while copying, PtFork gave this space its entries back and nothing reached either
    /// host, so the queued write-protections are dropped. Refused on the host after copying, this
    /// space keeps its write-protected entries, mirrored onto its host again. Either way
    /// <paramref name="halfMade"/> (the child or the snapshot: its frame references are exactly
    /// those of the leaves it got) is disposed and the exception goes on.
    /// </remarks>
    private void CopyTableOnWrite(PageTable.PageTable copy, VmSpace? child, Action<IoMem> keepIoMem, Action? copied, IDisposable halfMade, Func<ulong, bool>? hostCopyAt)
    {
        PtCursor cursor;
        try
        {
            cursor = LockTable(0, Size, mutable: true);
        }
        catch
        {
            halfMade.Dispose(); // this space went away while the copy waited for its table
            throw;
        }
        var visitor = new ForkMirror(this, child);
        bool done = false;
        try
        {
            lock (_ioMems)
            {
                foreach (IoMem io in _ioMems) keepIoMem(io);
            }
            if (hostCopyAt != null) HoldsHostCopies();
            PtFork.CopyOnWrite(cursor, copy, visitor, hostCopyAt);
            done = true;
            visitor.Dispatch();
            copied?.Invoke();
        }
        catch
        {
            try
            {
                if (done) RemirrorLocked(cursor);
                else visitor.DiscardParent();
            }
            finally
            {
                cursor.Release();
                halfMade.Dispose();
            }
            throw;
        }
        cursor.Release();
    }

    /// <summary>
    /// After the host refused some of a fork's write-protections (a flusher without a journal
    /// resets the ranges it had not applied to <c>PROT_NONE</c>): maps every leaf of the table,
    /// which <paramref name="cursor"/> holds whole, onto the host again as the table has it, so the
    /// host mirrors the table exactly instead of waiting for faults to refill it. Best effort: if
    /// the host refuses this too, it stays less permissive than the table, and faults refill it.
    /// </summary>
    private void RemirrorLocked(PtCursor cursor)
    {
        TlbFlusher flusher = NewFlusher();
        try
        {
            // Pages the host copied are mapped as they should be already, and mapping them again would drop the copies.
            var written = new List<(ulong Start, ulong End)>();
            if (MayHoldHostCopies) FindHostCopies(0, Size, written);
            int w = 0;
            cursor.Jump(0);
            while (cursor.Va < Size && cursor.FindNext(Size - cursor.Va) is not null)
            {
                PtSlot slot = cursor.Query();
                bool copied = HostCopies.Overlaps(written, ref w, slot.Va, slot.Size) && Pte.IsHostCopy(slot.Entry);
                flusher.EnsureRoomForOneMore();
                if (!copied && MirrorOf(slot.Va, slot.Size, slot.Entry) is { } op) flusher.IssueTlbFlush(op);
                cursor.MoveForward();
            }
            flusher.DispatchTlbFlush();
        }
        catch (Exception e) when (e is UVmException or InvalidOperationException)
        {
            // Refused again: the ranges not applied are PROT_NONE, and faults refill them from the table.
        }
    }

    /// <summary>
    /// Queues the host mappings of a last-level node's <paramref name="entries"/> (0 where none),
    /// the first at <paramref name="vaBase"/>: one per run of tracked frames contiguous in the
    /// file with one protection, one per entry of I/O memory (which this space must hold).
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>: the budget refused.</exception>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // a hot loop: no unoptimized first tier
    internal void IssueMirrorRuns(TlbFlusher flusher, ulong vaBase, ReadOnlySpan<ulong> entries)
    {
        int i = 0;
        while (i < entries.Length)
        {
            ulong e = entries[i];
            if (e == 0)
            {
                i++;
                continue;
            }
            int start = i;
            for (i++; i < entries.Length && Pte.ContinuesMapping(e, entries[i], (ulong)(i - start) * Paging.PageSize); i++)
            {
            }
            ulong va = vaBase + (ulong)start * Paging.PageSize;
            flusher.EnsureRoomForOneMore();
            flusher.IssueTlbFlush(MirrorOf(va, (ulong)(i - start) * Paging.PageSize, e)
                ?? throw new InvalidOperationException($"no I/O memory of the space holds 0x{Pte.Paddr(e):x}"));
        }
    }

    /// <summary>Takes one reference on the frame of each tracked entry of <paramref name="entries"/> (0 where none).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal void AddRefs(ReadOnlySpan<ulong> entries)
    {
        for (int i = 0; i < entries.Length; i++)
        {
            ulong e = entries[i];
            if (e == 0 || Pte.IsUntracked(e)) continue;
            ulong paddr = Pte.Paddr(e);
            // Two frames in a row, the first of an even number: one atomic add for both counts.
            if (((paddr >> Paging.PageShift) & 1) == 0 && i + 1 < entries.Length && entries[i + 1] is var next
                && next != 0 && !Pte.IsUntracked(next) && Pte.Paddr(next) == paddr + Paging.PageSize)
            {
                Pool.AddRefPair(paddr);
                i++;
            }
            else
            {
                Pool.AddRef(paddr);
            }
        }
    }

    /// <summary>Options for a space of the same size, pool, host guard, mapping budget and host-copy option as this one (a write watch of this space is not passed on).</summary>
    internal VmSpaceOptions SameShape() => new() { Size = Size, HostGuardSize = _arena.HostGuard, Pool = Pool, MaxHostMappings = Budget.Limit, HostCopies = _hostCopiesWanted };

    /// <summary>
    /// Takes the copy's references and queues the host updates, run by run: the parent's
    /// write-protections, and the child's mappings when the copy is a space (a snapshot's table
    /// has no host side).
    /// </summary>
    private sealed class ForkMirror : INodeForkVisitor
    {
        private readonly VmSpace _parent;
        private readonly TlbFlusher _parentFlusher;
        private readonly TlbFlusher? _childFlusher;

        internal ForkMirror(VmSpace parent, VmSpace? child)
        {
            _parent = parent;
            _parentFlusher = parent.NewFlusher();
            _childFlusher = child?.NewFlusher();
        }

        public void Leaf(ulong va, ulong size, ulong before, ulong after)
        {
            // Everything that can refuse comes first: a refusal must leave no trace of this leaf.
            _childFlusher?.EnsureRoomForOneMore();
            if (before != after) _parentFlusher.EnsureRoomForOneMore();
            if (!Pte.IsUntracked(after)) _parent.Pool.AddRef(Pte.Paddr(after));
            // The child holds the parent's I/O regions: the parent's lookup serves it.
            if (_childFlusher != null && _parent.MirrorOf(va, size, after) is { } map) _childFlusher.IssueTlbFlush(map);
            // A leaf made a host copy is mapped private (its frame, W kept); any other lost W.
            if (before != after)
                _parentFlusher.IssueTlbFlush(Pte.IsHostCopy(after) ? _parent.MirrorOf(va, size, after)!.Value : TlbFlushOp.ForProtect(va, size, Pte.HostProt(after)));
        }

        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
        public void Leaves(ulong vaBase, ReadOnlySpan<ulong> before, ReadOnlySpan<ulong> after)
        {
            // As Leaf, a run at a time: everything that can refuse first, references last.
            if (_childFlusher != null) _parent.IssueMirrorRuns(_childFlusher, vaBase, after);
            int i = 0;
            while (i < after.Length)
            {
                if (after[i] == before[i])
                {
                    i++;
                    continue;
                }
                int start = i;
                ulong first = after[i];
                for (i++; i < after.Length && after[i] != before[i] && Pte.IsHostCopy(after[i]) == Pte.IsHostCopy(first)
                     && Pte.HostProt(after[i]) == Pte.HostProt(first)
                     && (!Pte.IsHostCopy(first) || Pte.Paddr(after[i]) == Pte.Paddr(first) + (ulong)(i - start) * Paging.PageSize); i++)
                {
                }
                ulong va = vaBase + (ulong)start * Paging.PageSize, len = (ulong)(i - start) * Paging.PageSize;
                _parentFlusher.EnsureRoomForOneMore();
                _parentFlusher.IssueTlbFlush(Pte.IsHostCopy(first) ? _parent.MirrorOf(va, len, first)!.Value : TlbFlushOp.ForProtect(va, len, Pte.HostProt(first)));
            }
            _parent.AddRefs(after);
        }

        internal void DiscardParent() => _parentFlusher.Discard();

        internal void Dispatch()
        {
            _parentFlusher.DispatchTlbFlush();
            _childFlusher?.DispatchTlbFlush();
        }
    }
}
