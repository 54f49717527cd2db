using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

// Putting a snapshot's entries back, for a reset in place (VmSpace.ResetTo): first the table,
// page by page (RestoreFrom), then the host, span by span (MirrorRestored); and taking a whole
// batch back before it reaches the host (Abandon).
public sealed partial class CursorMut
{
    /// <summary>
    /// Restored pages closer than this many pages are mirrored onto the host as one span, the
    /// clean pages between them mapped again as they are. One host call costs about what
    /// dropping a few hundred resident pages costs (on the reference machine ~8 µs a call against
    /// ~10 ns a page), so scattered dirt is put back with a few large calls and clustered dirt
    /// with one call per cluster.
    /// </summary>
    internal const ulong SpanGapPages = 512;

    /// <summary>
    /// Makes the table's slot at <paramref name="va"/> what <paramref name="snapshot"/> has there,
    /// without touching the host (<see cref="MirrorRestored"/> does, for every range this
    /// changed). Returns the range around <paramref name="va"/> over which the table now agrees
    /// with the snapshot (ending at least one page on) and whether it changed anything: a page or 2 MiB entry that agrees is left
    /// alone; a tracked frame of the snapshot is mapped with a reference of its own, replacing
    /// what was there; I/O memory is mapped again; where the snapshot has nothing, whatever is
    /// mapped is unmapped. Frames replaced or unmapped are released after the dispatch.
    /// </summary>
    internal (VaddrRange Agreed, bool Changed) RestoreFrom(TableSnapshot snapshot, ulong va)
    {
        _pt.Jump(va);
        PtSlot current = _pt.Query();
        (ulong frozen, int level) = snapshot.PeekLeaf(va);
        ulong want = _space.Adapt(frozen);
        if (current.IsMapped && current.Entry == want && current.Level == level) return (new VaddrRange(current.Va, current.Va + current.Size), false);
        if (!Pte.IsPresent(want))
        {
            if (!current.IsMapped) return (new VaddrRange(va, va + Paging.PageSize), false);
            PtSlot taken = _pt.TakeNext(Paging.PageSize); // a 2 MiB I/O entry is split first
            if (!Pte.IsUntracked(taken.Entry)) _flusher.ReleaseAfterDispatch(Pte.Paddr(taken.Entry));
            return (new VaddrRange(taken.Va, taken.Va + taken.Size), true);
        }
        if (!Pte.IsUntracked(want))
        {
            _space.Pool.AddRef(Pte.Paddr(want));
            ReleaseReplaced(_pt.MapBase(want));
            return (new VaddrRange(va, va + Paging.PageSize), true);
        }
        // I/O memory: the snapshot's whole entry again, as MapIoMem mapped it.
        (IoMem io, _) = snapshot.FindIoMem(Pte.Paddr(want));
        _space.KeepIoMem(io);
        ulong start = Paging.AlignDown(va, Paging.SizeAt(level)), end = start + Paging.SizeAt(level);
        PageProperty prop = Pte.ToProp(want);
        ulong at = Pte.Paddr(want);
        _pt.Jump(start);
        while (_pt.Va < end)
        {
            (PtSlot slot, ulong replaced) = _pt.MapUntrackedStep(at, end, prop);
            ReleaseReplaced(replaced);
            at += slot.Size;
        }
        return (new VaddrRange(start, end), true);
    }

    private void ReleaseReplaced(ulong old)
    {
        if (Pte.IsPresent(old) && !Pte.IsUntracked(old)) _flusher.ReleaseAfterDispatch(Pte.Paddr(old));
    }

    /// <summary>
    /// Queues the host updates for the ranges <see cref="RestoreFrom"/> changed, in address
    /// order: ranges closer than <see cref="SpanGapPages"/> form one span, and each span is
    /// mapped as the snapshot has it, one operation per run of frames contiguous in the file
    /// with one protection (holes are reset). Outside the ranges the table agrees with the
    /// snapshot already, so a span's clean pages are mapped again as they are. Not dispatched.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>: the updates might not fit the budget.</exception>
    internal void MirrorRestored(TableSnapshot snapshot, List<VaddrRange> changed)
    {
        const ulong gap = SpanGapPages * Paging.PageSize;
        int i = 0;
        while (i < changed.Count)
        {
            ulong start = changed[i].Start, end = changed[i].End;
            for (i++; i < changed.Count && changed[i].Start - end < gap; i++) end = changed[i].End;
            snapshot.VisitRuns(start, end, (va, len, entry) =>
            {
                _flusher.EnsureRoomForOneMore();
                // I/O memory in a span is the space's already, or was kept by RestoreFrom.
                _flusher.IssueTlbFlush(!Pte.IsPresent(entry) ? TlbFlushOp.ForUnmap(va, len)
                    : _space.MirrorOf(va, len, _space.Adapt(entry)) ?? throw new InvalidOperationException($"the space holds no I/O memory at 0x{Pte.Paddr(entry):x}"));
            });
        }
    }

    /// <summary>
    /// Takes back every change made since the last dispatch, before any of it reached the host:
    /// the table is again what it was, the references the new mappings took are dropped, and
    /// nothing is left to dispatch.
    /// </summary>
    internal void Abandon()
    {
        _pt.UndoJournal(DropMappedReference);
        _flusher.ForgetBatch();
    }

    /// <summary>
    /// Every page that this cursor's range or <paramref name="snapshot"/> maps, in address order
    /// (pages both map appear twice): what a reset must compare when no change log says less.
    /// </summary>
    internal List<ulong> PagesEitherMaps(TableSnapshot snapshot)
    {
        var pages = new List<ulong>();
        snapshot.VisitLeaves((va, _, level) =>
        {
            for (ulong p = va; p < va + Paging.SizeAt(level); p += Paging.PageSize) pages.Add(p);
        });
        ulong end = _pt.BarrierEnd;
        _pt.Jump(_pt.BarrierStart);
        while (_pt.Va < end && _pt.FindNext(end - _pt.Va) is not null)
        {
            PtSlot slot = _pt.Query();
            for (ulong p = slot.Va; p < slot.Va + slot.Size; p += Paging.PageSize) pages.Add(p);
            _pt.MoveForward();
        }
        pages.Sort();
        return pages;
    }
}
