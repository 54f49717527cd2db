using UVm.Frames;
using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>Changes the rights and cache policy of one slot in <see cref="CursorMut.ProtectNext"/>.</summary>
/// <param name="flags">The slot's flags, to update in place.</param>
/// <param name="cache">The slot's cache policy, to update in place.</param>
public delegate void ProtectOp(ref PageFlags flags, ref CachePolicy cache);

/// <summary>
/// A cursor that maps, unmaps and protects pages in its range, and queues the matching host
/// updates on its <see cref="Flusher"/>. Disposing it dispatches what is still pending, then
/// releases its part of the page table.
/// </summary>
/// <remarks>
/// A batch is all or nothing for the page table: when the host refuses a dispatch (an explicit
/// one, the one <see cref="Unmap(ulong)"/> makes, or the one on <see cref="Cursor.Dispose"/>),
/// every change the cursor made since its previous dispatch is undone and the dispatch throws
/// <see cref="UVmException"/> (<see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>).
/// </remarks>
public sealed partial class CursorMut : Cursor, IFlushJournal
{
    private readonly TlbFlusher _flusher;

    internal CursorMut(VmSpace space, PtCursor pt, TlbFlusher flusher) : base(space, pt)
    {
        _flusher = flusher;
        pt.StartJournal();
        flusher.Journal = this;
    }

    void IFlushJournal.Commit()
    {
        _pt.CommitJournal();
        _kept = null;
        _tightened = null;
    }

    List<TlbFlushOp> IFlushJournal.Undo(List<TlbFlushOp> reset)
    {
        _pt.UndoJournal(DropMappedReference);
        // What the restored table maps in the ranges the host reset, to map there again.
        var refill = new List<TlbFlushOp>();
        foreach (TlbFlushOp range in reset)
        {
            ulong end = range.Va + range.Length;
            _pt.Jump(range.Va);
            while (_pt.Va < end && _pt.FindNext(end - _pt.Va) is not null)
            {
                PtSlot slot = _pt.Query();
                ulong from = Math.Max(slot.Va, range.Va), to = Math.Min(slot.Va + slot.Size, end);
                if (_space.MirrorOf(slot, from, to - from) is { } op) refill.Add(op);
                if (to >= end) break;
                _pt.MoveForward();
            }
        }
        return refill;
    }

    /// <summary>For an undone change: a mapping made in the batch held a reference of its own, which goes with the mapping.</summary>
    private void DropMappedReference(PtChangeKind kind, ulong old, ulong mapped)
    {
        if (kind == PtChangeKind.Map && Pte.IsPresent(mapped) && !Pte.IsUntracked(mapped)) _space.Pool.Release(Pte.Paddr(mapped));
    }

    /// <summary>The cursor's flusher: what it changed in the page table but not yet on the host.</summary>
    public TlbFlusher Flusher
    {
        get
        {
            ThrowIfDisposed();
            return _flusher;
        }
    }

    /// <summary>
    /// Maps <paramref name="frame"/> at the current address and moves one page on. The mapping
    /// takes its own reference; the caller keeps its handle. A frame already mapped there is
    /// replaced and released after the flush that removes it from the host. Not dispatched.
    /// </summary>
    /// <exception cref="ArgumentException">The frame belongs to another pool.</exception>
    /// <exception cref="ArgumentOutOfRangeException">No page of the cursor's range is left.</exception>
    /// <exception cref="ObjectDisposedException">The cursor or the frame handle was disposed.</exception>
    public void Map(UFrame frame, PageProperty prop)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(frame);
        frame.ThrowIfDisposed();
        if (!ReferenceEquals(frame.Pool, _space.Pool)) ThrowHelper.Argument("the frame belongs to another pool than the space's", nameof(frame));
        CheckSpan(Paging.PageSize);
        MapTracked(frame.Paddr, prop);
    }

    /// <summary>
    /// Maps every frame of <paramref name="segment"/>, in order, from the current address and
    /// moves past them; each mapping takes its own reference. Not dispatched.
    /// </summary>
    /// <exception cref="ArgumentException">The segment belongs to another pool.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The segment does not fit in the rest of the cursor's range.</exception>
    /// <exception cref="ObjectDisposedException">The cursor or the segment handle was disposed.</exception>
    public void Map(USegment segment, PageProperty prop)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(segment);
        segment.ThrowIfDisposed();
        if (!ReferenceEquals(segment.Pool, _space.Pool)) ThrowHelper.Argument("the segment belongs to another pool than the space's", nameof(segment));
        CheckSpan(segment.Size);
        ulong end = segment.Paddr + segment.Size;
        for (ulong paddr = segment.Paddr; paddr < end; paddr += Paging.PageSize) MapTracked(paddr, prop);
    }

    private void MapTracked(ulong paddr, PageProperty prop, bool takeReference = true, bool populate = false)
    {
        prop = prop with { PrivFlags = prop.PrivFlags & ~PrivilegedPageFlags.Avail1 };
        ulong va = _pt.Va;
        ulong pte = Pte.Leaf(paddr, prop, 1);
        _flusher.EnsureRoomForOneMore();
        if (takeReference) _space.Pool.AddRef(paddr);
        ulong old = _pt.MapBase(pte);
        var op = TlbFlushOp.ForMap(va, Paging.PageSize, _space.Pool.Fd, paddr, Pte.HostProt(pte), populate);
        if (Pte.IsPresent(old) && !Pte.IsUntracked(old)) _flusher.IssueTlbFlushWith(op, Pte.Paddr(old));
        else _flusher.IssueTlbFlush(op);
    }

    /// <summary>
    /// Maps <c>[offset, offset + len)</c> of <paramref name="ioMem"/> (cut at its end) from the
    /// current address, with 2 MiB entries wherever address and region are both aligned, and
    /// moves past it. The space keeps the region until the space is disposed. Not dispatched.
    /// An offset at or past the region's end maps nothing.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="len"/> or <paramref name="offset"/> is not page aligned; or the
    /// region's file is not open for the rights asked (write-only, or read-only mapped with W).</exception>
    /// <exception cref="ArgumentOutOfRangeException">The mapping does not fit in the rest of the cursor's range.</exception>
    /// <exception cref="ObjectDisposedException">The cursor or the region was disposed.</exception>
    public void MapIoMem(IoMem ioMem, PageProperty prop, ulong len, ulong offset)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(ioMem);
        if (!Paging.IsAligned(len)) ThrowHelper.Argument("the length must be page aligned", nameof(len));
        if (!Paging.IsAligned(offset)) ThrowHelper.Argument("the offset must be page aligned", nameof(offset));
        if (!ioMem.IsOpen) ThrowHelper.Disposed(nameof(IoMem));
        // What the host would refuse for the file's open mode is refused here, before the table changes.
        if (!ioMem.IsReadable || ((prop.Flags & PageFlags.W) != 0 && !ioMem.IsWritable))
            ThrowHelper.Argument($"the file of {ioMem} is open {(ioMem.IsReadable ? "read-only" : "write-only")}: it cannot be mapped {prop.Flags & PageFlags.RWX}", nameof(ioMem));
        if (offset >= ioMem.Size) return;
        ulong length = Math.Min(len, ioMem.Size - offset);
        CheckSpan(length);
        _space.KeepIoMem(ioMem);
        prop = prop with { PrivFlags = prop.PrivFlags | PrivilegedPageFlags.Avail1 };
        ulong end = _pt.Va + length;
        ulong paddr = ioMem.Paddr + offset;
        while (_pt.Va < end)
        {
            _flusher.EnsureRoomForOneMore();
            (PtSlot slot, ulong old) = _pt.MapUntrackedStep(paddr, end, prop);
            var op = TlbFlushOp.ForMap(slot.Va, slot.Size, ioMem.Fd, ioMem.FileOffset + (paddr - ioMem.Paddr), Pte.HostProt(slot.Entry));
            if (old != 0 && !Pte.IsUntracked(old)) _flusher.IssueTlbFlushWith(op, Pte.Paddr(old));
            else _flusher.IssueTlbFlush(op);
            paddr += slot.Size;
        }
    }

    /// <summary>
    /// The I/O memory region this space mapped that contains <paramref name="paddr"/>, and the
    /// offset of <paramref name="paddr"/> in it; null if none. Always succeeds for a
    /// <see cref="MappedIoMem"/> address the space still maps.
    /// </summary>
    public (IoMem IoMem, ulong Offset)? FindIoMemByPaddr(ulong paddr)
    {
        ThrowIfDisposed();
        return _space.FindIoMemByPaddr(paddr);
    }

    /// <summary>
    /// Unmaps everything in the next <paramref name="len"/> bytes, moves past them and
    /// dispatches the flush (so on return the host no longer maps them and their frames are
    /// released). Holes are skipped. A 2 MiB I/O entry only partly covered is split first.
    /// The host side is one <c>mmap</c> back to <c>PROT_NONE</c> from the first unmapped page
    /// to the end of the last (the holes between are already <c>PROT_NONE</c>).
    /// </summary>
    /// <returns>The number of tracked frames unmapped.</returns>
    /// <exception cref="ArgumentException"><paramref name="len"/> is not page aligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The span passes the cursor's end.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostMappingLimit"/> when punching the hole could pass
    /// the space's host-mapping budget (as <c>munmap</c> fails past <c>vm.max_map_count</c>); nothing is unmapped.</exception>
    public ulong Unmap(ulong len) => Unmap(len, checkBudget: true);

    /// <summary>
    /// <see cref="Unmap(ulong)"/>; without <paramref name="checkBudget"/> for undoing a map that
    /// failed half-way: the range goes back to the state it had before, which fitted the budget.
    /// </summary>
    internal ulong Unmap(ulong len, bool checkBudget)
    {
        ThrowIfDisposed();
        if (!Paging.IsAligned(len)) ThrowHelper.Argument("the length must be page aligned", nameof(len));
        CheckSpan(len);
        if (checkBudget && !_flusher.SurelyHasRoomForOneMore()) EnsureRoomToUnmap(len);
        ulong end = _pt.Va + len;
        ulong frames = 0;
        ulong runEnd = 0;
        bool first = true;
        while (_pt.Va < end)
        {
            PtSlot slot = _pt.TakeNext(end - _pt.Va);
            if (!slot.IsMapped) break;
            // Each op reaches back over the hole before its slot, so all of them merge into one.
            ulong from = first ? slot.Va : runEnd;
            first = false;
            runEnd = slot.Va + slot.Size;
            var op = TlbFlushOp.ForUnmap(from, runEnd - from);
            if (Pte.IsUntracked(slot.Entry))
            {
                _flusher.IssueTlbFlush(op);
            }
            else
            {
                frames++;
                _flusher.IssueTlbFlushWith(op, Pte.Paddr(slot.Entry));
            }
        }
        _flusher.DispatchTlbFlush();
        return frames;
    }

    /// <summary>
    /// The slow budget check of <see cref="Unmap(ulong, bool)"/>: finds the host range the unmap
    /// will reset (first mapped page to the end of the last), counts exactly whether that fits,
    /// and moves the cursor back. Throws when it does not fit.
    /// </summary>
    private void EnsureRoomToUnmap(ulong len)
    {
        ulong start = _pt.Va, end = start + len;
        if (_pt.FindNext(len) is not { } first)
        {
            _pt.Jump(start);
            return; // nothing mapped: nothing reaches the host
        }
        ulong last = first;
        while (_pt.Va < end)
        {
            PtSlot slot = _pt.Query();
            last = Math.Min(slot.Va + slot.Size, end); // a huge entry across the end is split there
            _pt.MoveForward();
            if (_pt.Va >= end || _pt.FindNext(end - _pt.Va) is null) break;
        }
        _pt.Jump(start);
        _flusher.EnsureRoomToReset(first, last);
    }

    /// <summary>
    /// Applies <paramref name="op"/> to the first mapped slot in the next <paramref name="len"/>
    /// bytes, moves past it and returns its range; returns null (the cursor at or past the span's
    /// end) when nothing is mapped there. Does NOT dispatch: until <see cref="Flusher"/> is
    /// dispatched the host may still grant the old rights.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="len"/> is not page aligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The span passes the cursor's end.</exception>
    public VaddrRange? ProtectNext(ulong len, ProtectOp op)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(op);
        if (!Paging.IsAligned(len)) ThrowHelper.Argument("the length must be page aligned", nameof(len));
        CheckSpan(len);
        _flusher.EnsureRoomForOneMore();
        PtSlot? slot = _pt.ProtectNext(len, prop =>
        {
            PageFlags flags = prop.Flags;
            CachePolicy cache = prop.Cache;
            op(ref flags, ref cache);
            return prop with { Flags = flags, Cache = cache };
        });
        if (slot is not { } s) return null;
        _flusher.IssueTlbFlush(TlbFlushOp.ForProtect(s.Va, s.Size, Pte.HostProt(s.Entry)));
        return new VaddrRange(s.Va, s.Va + s.Size);
    }

    private protected override void OnDispose() => _flusher.DispatchTlbFlush();

    /// <summary>
    /// Maps the frame at <paramref name="paddr"/> at the current address, taking over the
    /// caller's reference, and moves one page on; <paramref name="populate"/> asks the host to
    /// fill its page tables in the same call. For the areas layer's fault paths.
    /// </summary>
    /// <remarks>When it throws (no page left in the range, the host-mapping budget refuses), nothing
    /// is mapped and the caller's reference is dropped.</remarks>
    internal void MapOwnedFrame(ulong paddr, PageProperty prop, bool populate)
    {
        try
        {
            CheckSpan(Paging.PageSize);
            _flusher.EnsureRoomForOneMore();
        }
        catch
        {
            _space.Pool.Release(paddr);
            throw;
        }
        MapTracked(paddr, prop, takeReference: false, populate);
    }

}
