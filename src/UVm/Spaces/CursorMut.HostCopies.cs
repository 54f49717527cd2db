using UVm.Frames;
using UVm.Host;
using UVm.Interop;
using UVm.PageTable;

namespace UVm.Spaces;

// Host copies under a cursor: what a batch must keep of them in case the host refuses it, and
// how a space stops having them (dissolving them into frames).
public sealed partial class CursorMut
{
    /// <summary>The host copies the batch in flight covers, with their contents, kept until it is committed.</summary>
    private List<(ulong Va, byte[] Contents)>? _kept;

    /// <summary>The ranges of the batch in flight made inaccessible on the host while it is applied.</summary>
    private List<(ulong Start, ulong End)>? _tightened;

    /// <summary>
    /// A refused batch is undone by mapping the restored table again over every range it touched,
    /// which would drop the host's copies there (a private mapping starts over from its frame).
    /// So before a batch that covers host copies reaches the host, its ranges lose every right on
    /// the host (a write meanwhile faults and waits for this cursor, so none slips between the
    /// read and the batch), and the contents of the copies under it are read, to be written back
    /// if it is refused. Applied, every operation gives its range its new state.
    /// </summary>
    void IFlushJournal.Preserve(List<TlbFlushOp> batch)
    {
        _kept = null;
        _tightened = null;
        if (!_space.MayHoldHostCopies) return;
        // Only a batch that maps host copies, or changes entries that were or become host copies,
        // covers any (a fault that fills a hole, say, does not).
        bool maps = false;
        foreach (TlbFlushOp op in batch) maps |= op.HostCopy;
        if (!maps && !_pt.JournalTouchesHostCopies()) return;
        var ranges = new List<(ulong Start, ulong End)>();
        foreach (TlbFlushOp op in batch)
        {
            if (ranges.Count > 0 && op.Va <= ranges[^1].End) ranges[^1] = (ranges[^1].Start, Math.Max(ranges[^1].End, op.Va + op.Length));
            else ranges.Add((op.Va, op.Va + op.Length));
        }
        _tightened = [];
        foreach ((ulong s, ulong e) in ranges)
        {
            if (Libc.Mprotect(_space.HostBase + (nint)s, (nuint)(e - s), Libc.PROT_NONE) != 0) HostCall.Fail("mprotect before a batch over host copies");
            _tightened.Add((s, e));
        }
        var written = new List<(ulong Start, ulong End)>();
        foreach ((ulong s, ulong e) in ranges) _space.FindHostCopies(s, e, written);
        if (written.Count == 0) return;
        _kept = [];
        foreach ((ulong s, ulong e) in written)
        {
            for (ulong va = s; va < e; va += Paging.PageSize)
            {
                byte[] page = HostCopies.NewPage();
                HostCopies.ReadPage(_space.HostBase, va, HostCopies.AddressOf(page));
                _kept.Add((va, page));
            }
        }
    }

    /// <summary>
    /// After a refused batch (the table restored, the ranges the host had changed mapped again
    /// from it): every range <see cref="IFlushJournal.Preserve"/> made inaccessible gets the
    /// table's rights back, and the host copies it kept are written back. Best effort: a range
    /// the host refuses stays less permissive than the table, and a fault refills it.
    /// </summary>
    void IFlushJournal.Refilled()
    {
        if (_tightened != null)
        {
            foreach ((ulong s, ulong e) in _tightened)
            {
                _pt.Jump(s);
                while (_pt.Va < e && _pt.FindNext(e - _pt.Va) is not null)
                {
                    PtSlot slot = _pt.Query();
                    ulong from = Math.Max(slot.Va, s), to = Math.Min(slot.Va + slot.Size, e);
                    Libc.Mprotect(_space.HostBase + (nint)from, (nuint)(to - from), Pte.HostProt(slot.Entry));
                    if (to >= e) break;
                    _pt.MoveForward();
                }
            }
        }
        if (_kept != null)
        {
            foreach ((ulong va, byte[] contents) in _kept)
            {
                _pt.Jump(va);
                PtSlot slot = _pt.Query();
                if (slot.IsMapped && Pte.IsHostCopy(slot.Entry)) HostCopies.WritePage(_space.HostBase, va, contents);
            }
        }
        _kept = null;
        _tightened = null;
    }

    /// <summary>
    /// Gives the host copies of the cursor's range their rights on the host again, as the table
    /// has them, after a refused <see cref="DissolveHostCopies"/> took W away. Best effort: a copy
    /// the host refuses stays less permissive than its entry, and a write's fault gives W back.
    /// </summary>
    internal void RegrantHostCopies()
    {
        ProtectHostCopies(HostCopySlots(), 0, throwIfRefused: false);
    }

    /// <summary>The host-copy leaves of the cursor's range, in address order.</summary>
    private List<PtSlot> HostCopySlots()
    {
        var copies = new List<PtSlot>();
        ulong end = _pt.BarrierEnd;
        _pt.Jump(_pt.BarrierStart);
        while (_pt.Va < end && _pt.FindNext(end - _pt.Va) is not null)
        {
            PtSlot slot = _pt.Query();
            if (Pte.IsHostCopy(slot.Entry)) copies.Add(slot);
            _pt.MoveForward();
        }
        return copies;
    }

    /// <summary>
    /// <c>mprotect</c>s <paramref name="copies"/> (in address order) to their entries' host rights
    /// without <paramref name="without"/>, one call per run with one protection.
    /// </summary>
    private void ProtectHostCopies(List<PtSlot> copies, int without, bool throwIfRefused)
    {
        for (int i = 0; i < copies.Count;)
        {
            int prot = Pte.HostProt(copies[i].Entry);
            ulong start = copies[i].Va, stop = start + copies[i].Size;
            for (i++; i < copies.Count && copies[i].Va == stop && Pte.HostProt(copies[i].Entry) == prot; i++) stop += copies[i].Size;
            if (without != 0 && (prot & without) == 0) continue;
            int rc = Libc.Mprotect(_space.HostBase + (nint)start, (nuint)(stop - start), prot & ~without);
            if (rc != 0 && throwIfRefused) HostCall.Fail("mprotect of host copies");
        }
    }

    /// <summary>
    /// Turns every host copy of the cursor's range into an ordinary entry, so nothing of the
    /// space's contents lives outside its frames: a page the host copied gets a frame of its own
    /// holding the copy's contents (with the entry's rights); a page it did not copy keeps the
    /// shared frame, copy-on-write (without W). Write access is taken from the copies on the
    /// host first, so no write slips between reading a copy and replacing it: a write meanwhile
    /// faults and waits for the cursor. With <paramref name="keepUnwritten"/> a page the host did
    /// not copy stays a host copy (its W on the host given back by the same batch). Queued, not
    /// dispatched. Returns the host copies left (those kept).
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/>: no frame for a copy (the batch must be abandoned);
    /// <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>: the host refused to take write access
    /// away or to scan (some copies may have lost W on the host only, which a write's fault gives back).</exception>
    internal int DissolveHostCopies(bool keepUnwritten)
    {
        ulong end = _pt.BarrierEnd;
        List<PtSlot> copies = HostCopySlots();
        if (copies.Count == 0) return 0;
        if (keepUnwritten)
        {
            // Nothing to dissolve if the host copied nothing: a write after this look is one made
            // after the snapshot, in a copy that stays one.
            var any = new List<(ulong Start, ulong End)>();
            _space.FindHostCopies(_pt.BarrierStart, end, any);
            if (any.Count == 0) return copies.Count;
        }
        ProtectHostCopies(copies, Libc.PROT_WRITE, throwIfRefused: true); // write access away
        var written = new List<(ulong Start, ulong End)>();
        _space.FindHostCopies(_pt.BarrierStart, end, written);
        int w = 0, kept = 0;
        foreach (PtSlot slot in copies)
        {
            bool copied = HostCopies.Overlaps(written, ref w, slot.Va, slot.Size);
            if (!copied && keepUnwritten)
            {
                // Stays a host copy: its rights back on the host, in the same batch.
                _flusher.EnsureRoomForOneMore();
                _flusher.IssueTlbFlush(TlbFlushOp.ForProtect(slot.Va, slot.Size, Pte.HostProt(slot.Entry)));
                kept++;
                continue;
            }
            ulong entry;
            System.Diagnostics.Debug.Assert(slot.Level == 1, "host copies are base pages of tracked frames");
            if (copied)
            {
                using UFrame frame = _space.Pool.AllocFrame();
                HostCopies.ReadPage(_space.HostBase, slot.Va, _space.Pool.LinearPointer(frame.Paddr));
                entry = (slot.Entry & ~(Pte.AddrMask | Pte.HostCopy)) | frame.Paddr;
                _space.Pool.AddRef(frame.Paddr); // the entry's reference; the handle's goes with it
            }
            else
            {
                entry = slot.Entry & ~(Pte.HostCopy | Pte.Writable);
                _space.Pool.AddRef(Pte.Paddr(entry)); // the entry's, beside the one it replaces (released after the dispatch)
            }
            _pt.Jump(slot.Va);
            ReleaseReplaced(_pt.MapBase(entry));
            _flusher.EnsureRoomForOneMore();
            _flusher.IssueTlbFlush(_space.MirrorOf(slot.Va, slot.Size, entry)!.Value);
        }
        return kept;
    }
}
