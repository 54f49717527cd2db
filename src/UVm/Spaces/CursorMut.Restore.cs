using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

// Putting a snapshot's entries back, for a reset in place (VmSpace.ResetTo), and taking a whole
// batch back before it reaches the host.
public sealed partial class CursorMut
{
    /// <summary>
    /// Makes the slot at <paramref name="va"/> what <paramref name="snapshot"/> has there, and
    /// returns the address up to which the table now agrees with it (at least one page on): a
    /// page or 2 MiB entry that already agrees is left alone; a tracked frame of the snapshot is
    /// mapped with a reference of its own, replacing what was there; I/O memory is mapped again;
    /// where the snapshot has nothing, whatever is mapped is unmapped. Not dispatched.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/>: one more host update might not fit the budget; the slot is unchanged.</exception>
    internal ulong RestoreFrom(TableSnapshot snapshot, ulong va)
    {
        _pt.Jump(va);
        PtSlot current = _pt.Query();
        (ulong want, int level) = snapshot.PeekLeaf(va);
        ulong wantStart = Paging.AlignDown(va, Paging.SizeAt(level));
        if (current.IsMapped && current.Entry == want && current.Level == level) return current.Va + current.Size;
        _flusher.EnsureRoomForOneMore();
        if (!Pte.IsPresent(want))
        {
            if (!current.IsMapped) return va + Paging.PageSize;
            PtSlot taken = _pt.TakeNext(Paging.PageSize); // a 2 MiB I/O entry is split first
            var unmap = TlbFlushOp.ForUnmap(taken.Va, taken.Size);
            if (Pte.IsUntracked(taken.Entry)) _flusher.IssueTlbFlush(unmap);
            else _flusher.IssueTlbFlushWith(unmap, Pte.Paddr(taken.Entry));
            return taken.Va + taken.Size;
        }
        if (!Pte.IsUntracked(want))
        {
            ulong paddr = Pte.Paddr(want);
            _space.Pool.AddRef(paddr);
            ulong old = _pt.MapBase(want);
            var map = TlbFlushOp.ForMap(va, Paging.PageSize, _space.Pool.Fd, paddr, Pte.HostProt(want));
            if (Pte.IsPresent(old) && !Pte.IsUntracked(old)) _flusher.IssueTlbFlushWith(map, Pte.Paddr(old));
            else _flusher.IssueTlbFlush(map);
            return va + Paging.PageSize;
        }
        // I/O memory: the snapshot's whole entry again, as MapIoMem mapped it.
        (IoMem io, ulong offset) = snapshot.FindIoMem(Pte.Paddr(want));
        _space.KeepIoMem(io);
        ulong end = wantStart + Paging.SizeAt(level);
        PageProperty prop = Pte.ToProp(want);
        ulong at = Pte.Paddr(want);
        _pt.Jump(wantStart);
        while (_pt.Va < end)
        {
            _flusher.EnsureRoomForOneMore();
            (PtSlot slot, ulong replaced) = _pt.MapUntrackedStep(at, end, prop);
            var op = TlbFlushOp.ForMap(slot.Va, slot.Size, io.Fd, io.FileOffset + offset + (at - Pte.Paddr(want)), Pte.HostProt(slot.Entry));
            if (replaced != 0 && !Pte.IsUntracked(replaced)) _flusher.IssueTlbFlushWith(op, Pte.Paddr(replaced));
            else _flusher.IssueTlbFlush(op);
            at += slot.Size;
        }
        return end;
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
