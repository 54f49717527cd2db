using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.PageTable;

namespace UVm.Spaces;

// Life of a space, and the one rule that orders everything against Dispose.
//
//   Live ──Dispose──▶ Disposing ──(table emptied, arena unmapped)──▶ Disposed
//
// Dispose first closes the arena gate (IsDisposed is true from then on: Disposing), waits for
// the fallible accesses already inside the gate, then takes the whole page table (waiting for
// every live cursor), empties it, releases it and only then unmaps the arena.
//
// The rule: every host call on the arena (a cursor's dispatch, a fault's refill, a fork, a
// prefault) is made while holding a part of the page table taken through LockTable, which
// checks the gate AFTER its locks are held. So either the check sees the gate open, and Dispose
// cannot unmap the arena before those locks are released; or it sees it closed, and the caller
// gets ObjectDisposedException having touched nothing. Fallible accesses are ordered by the gate
// itself (ArenaGate). No host call ever lands in an arena that is no longer the space's.
//
// Lock order (outermost first): a fault stripe (one per 2 MiB region, held while the page-fault
// handler runs: the only UVm lock user code runs under, see PageFaultHandler); AddressSpace's
// area lock; a snapshot's use lock (TableSnapshot); page-table node locks, parent before child
// (PtCursor; a thread that would wait for a node it holds itself gets InvalidOperationException
// instead); a space's I/O-memory list; the frame pool's lock; the host-mapping budget's process
// lock. Leaves, nothing taken under them: a table's change log (PtChangeLog) and the write
// watch's written pages (WriteWatch).

/// <summary>
/// A guest address space: a page table that is the truth about what is mapped where, mirrored
/// onto a reserved host arena so the host MMU enforces every right for real.
/// </summary>
/// <remarks>
/// <para>Guest address <c>va</c> is host address <see cref="HostBase"/> <c>+ va</c>. A new space
/// maps nothing. Mappings are changed through cursors (<see cref="CursorMut"/>), which lock the
/// part of the page table they cover: cursors on disjoint ranges work in parallel, a cursor
/// overlapping a live one waits until that one is disposed (on the same thread: a deadlock).</para>
/// <para>Thread-safe, except that each cursor belongs to one thread at a time.</para>
/// </remarks>
public sealed partial class VmSpace : IDisposable
{
    private readonly HostArena _arena;
    private readonly PageTable.PageTable _pt;
    private readonly List<IoMem> _ioMems = new();
    private readonly Faults.ArenaGate _gate = new();
    private readonly bool _constructed; // false when the constructor threw: the finalizer has nothing to release

    /// <summary>Creates an empty space, reserving its host arena.</summary>
    /// <exception cref="ArgumentException">The size is zero, not a multiple of 2 MiB or above 128 TiB; the host guard is unaligned or
    /// above <see cref="VmSpaceOptions.MaxHostGuardSize"/>; the host-mapping budget is below 3.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> when the host refuses the reservation.</exception>
    public VmSpace(VmSpaceOptions? options = null)
    {
        options ??= new VmSpaceOptions();
        if (options.Size == 0 || options.Size % Paging.HugePageSize != 0 || options.Size > Paging.MaxUserSpace)
            ThrowHelper.Argument("the size must be a positive multiple of 2 MiB, at most 128 TiB", nameof(options));
        if (!Paging.IsAligned(options.HostGuardSize) || options.HostGuardSize > VmSpaceOptions.MaxHostGuardSize)
            ThrowHelper.Argument($"the host guard size must be page aligned and at most 0x{VmSpaceOptions.MaxHostGuardSize:x}", nameof(options));
        if (options.MaxHostMappings is < 3)
            ThrowHelper.Argument("the host-mapping budget must allow at least 3 mappings", nameof(options));
        Pool = options.Pool ?? FramePool.Default;
        _arena = new HostArena(options.Size, options.HostGuardSize);
        Budget = new HostMappingBudget(_arena.Base, options.Size, options.MaxHostMappings ?? HostMappingBudget.ProcessLimit);
        _pt = new PageTable.PageTable(options.Size);
        _hostCopiesWanted = options.HostCopies;
        _hostCopiesOff = !options.HostCopies;
        Created?.Invoke(this);
        _constructed = true;
    }

    /// <summary>
    /// A space dropped without <see cref="Dispose"/>: once nothing can reach it (no cursor, no
    /// reader or writer, not activated on any thread), its frames, I/O regions and arena go back
    /// as <see cref="Dispose"/> would give them back.
    /// </summary>
    ~VmSpace()
    {
        if (_constructed) Dispose();
    }

    /// <summary>End of the user range: valid guest addresses are <c>[0, Size)</c>.</summary>
    public ulong Size => _arena.Size;

    /// <summary>Host address of guest address 0.</summary>
    public nint HostBase => _arena.Base;

    /// <summary>The pool the space's frames belong to.</summary>
    public FramePool Pool { get; }

    /// <summary>Host-MMU work done for this space.</summary>
    public HostStats HostStats { get; } = new();

    /// <summary>Managed bytes the page table occupies now.</summary>
    public long PageTableBytes => _pt.FootprintBytes;

    /// <summary>Page-table nodes allocated now, the root included.</summary>
    public long PageTableNodes => _pt.NodeCount;

    /// <summary>Whether the space was disposed.</summary>
    public bool IsDisposed => _gate.IsClosed;

    /// <summary>The space activated on the calling thread, if any.</summary>
    public static VmSpace? Current => ThreadAccess.Current.Active is VmSpace { IsDisposed: false } s ? s : null;

    internal PageTable.PageTable Table => _pt;
    internal HostMappingBudget Budget { get; }

    /// <summary>The space's budget of host mappings (see <see cref="VmSpaceOptions.MaxHostMappings"/>).</summary>
    public int MaxHostMappings => Budget.Limit;

    internal TlbFlusher NewFlusher() => new(_arena, Pool, HostStats, Budget);
    internal HostArena Arena => _arena;

    /// <summary>
    /// A read-only cursor over <paramref name="range"/>. It may wait for cursors on overlapping
    /// ranges; dispose it promptly.
    /// </summary>
    /// <exception cref="ArgumentException">The range's ends are not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/> when the range is empty or passes <see cref="Size"/>.</exception>
    /// <exception cref="ObjectDisposedException">The space was disposed (also when that happens while the cursor waits for others).</exception>
    /// <exception cref="InvalidOperationException">The calling thread holds a cursor of this space that this one would have to
    /// wait for (an overlapping range, or one sharing the page-table node this one needs): it would wait on itself forever.</exception>
    public Cursor Cursor(VaddrRange range)
    {
        CheckRange(range);
        return new Cursor(this, LockTable(range.Start, range.End, mutable: false));
    }

    /// <summary>
    /// A cursor that can change mappings in <paramref name="range"/>. It may wait for cursors on
    /// overlapping ranges; dispose it promptly (disposing dispatches its pending host updates).
    /// </summary>
    /// <exception cref="ArgumentException">The range's ends are not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/> when the range is empty or passes <see cref="Size"/>.</exception>
    /// <exception cref="ObjectDisposedException">The space was disposed (also when that happens while the cursor waits for others).</exception>
    /// <exception cref="InvalidOperationException">As for <see cref="Cursor(VaddrRange)"/>.</exception>
    public CursorMut CursorMut(VaddrRange range)
    {
        CheckRange(range);
        return new CursorMut(this, LockTable(range.Start, range.End, mutable: true), NewFlusher());
    }

    /// <summary>
    /// Calls <paramref name="visit"/> with every mapped slot of the space, in address order, while
    /// holding the whole page table (so the slots form one consistent picture, and a frame seen
    /// stays alive during the call). For the layers above that read a space whole.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    internal void VisitMapped(Action<PageSlot> visit)
    {
        PtCursor cursor = LockTable(0, Size, mutable: false);
        try
        {
            while (cursor.Va < Size && cursor.FindNext(Size - cursor.Va) is not null)
            {
                visit(PageSlot.Of(cursor.Query()));
                cursor.MoveForward();
            }
        }
        finally
        {
            cursor.Release();
        }
    }

    /// <summary>
    /// Locks the part of the page table covering <c>[start, end)</c> and then checks that the
    /// space is live (the rule at the top of this file): what the caller does on the host while
    /// it holds the locks lands in this space's arena.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space is being or was disposed; nothing is held.</exception>
    internal PtCursor LockTable(ulong start, ulong end, bool mutable)
    {
        var pt = new PtCursor(_pt, start, end, mutable);
        if (IsDisposed)
        {
            pt.Release();
            ThrowHelper.Disposed(nameof(VmSpace));
        }
        return pt;
    }

    /// <summary>
    /// Makes this the space that fallible readers and writers of the calling thread act on, and
    /// returns the scope that restores what was active before when disposed (<c>using</c>); a
    /// caller that ignores it keeps the space active until something else is activated. The
    /// scope cannot be kept across an <c>await</c> (see <see cref="VmActivation"/>); the
    /// one-call accessors (<see cref="TryRead{T}"/>, ...) need no activation at all.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed (nothing changes).</exception>
    public VmActivation Activate()
    {
        ThrowIfDisposed();
        return VmActivation.Begin(ThreadAccess.Current, this);
    }

    /// <summary>Whether this space is activated on the calling thread.</summary>
    public bool IsActiveOnCurrentThread => ReferenceEquals(ThreadAccess.Current.Active, this) && !IsDisposed;

    /// <summary>Deactivates whatever space is activated on the calling thread.</summary>
    public static void Deactivate() => ThreadAccess.Current.Active = null;

    /// <summary>Host mappings (VMAs) the kernel shows inside the arena now, read from <c>/proc/self/maps</c>.</summary>
    public int CountHostMappings() => ProcMaps.Read((ulong)HostBase, (ulong)HostBase + Size).Count;

    /// <summary>
    /// Differences between the page table and the host mappings of the arena, read from
    /// <c>/proc/self/maps</c>, in address order; empty when the host mirrors the table exactly
    /// (see <see cref="HostMirror"/>). At most <see cref="HostMirror.DefaultMaxDifferences"/> are
    /// listed; <see cref="HostMirror.Compare"/> also counts those beyond. Waits for other
    /// threads' cursors; must not be called while the calling thread holds a cursor of this space.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The space was disposed.</exception>
    public IReadOnlyList<MirrorDifference> CheckHostMirror() => HostMirror.Compare(this);

    /// <summary>The registered I/O memory region containing <paramref name="paddr"/> and the offset in it.</summary>
    internal (IoMem Io, ulong Offset)? FindIoMemByPaddr(ulong paddr)
    {
        lock (_ioMems)
        {
            foreach (IoMem io in _ioMems)
                if (io.Contains(paddr)) return (io, paddr - io.Paddr);
        }
        return null;
    }

    /// <summary>
    /// The host mapping that mirrors leaf <paramref name="entry"/> over <c>[va, va + length)</c>,
    /// the entry's address being the frame at <paramref name="va"/>: a map of the pool's memfd, or
    /// of the I/O memory file; null for I/O memory this space does not hold. A host copy's is
    /// private: mapped over a page the host copied, it drops the copy.
    /// </summary>
    internal TlbFlushOp? MirrorOf(ulong va, ulong length, ulong entry)
    {
        ulong paddr = Pte.Paddr(entry);
        int prot = Pte.HostProt(entry);
        if (!Pte.IsUntracked(entry)) return TlbFlushOp.ForMap(va, length, Pool.Fd, paddr, prot, hostCopy: Pte.IsHostCopy(entry));
        return FindIoMemByPaddr(paddr) is { } io ? TlbFlushOp.ForMap(va, length, io.Io.Fd, io.Io.FileOffset + io.Offset, prot) : null;
    }

    /// <summary>The host mapping that mirrors the part <c>[va, va + length)</c> of <paramref name="slot"/> (see <see cref="MirrorOf(ulong, ulong, ulong)"/>).</summary>
    internal TlbFlushOp? MirrorOf(in PtSlot slot, ulong va, ulong length) =>
        MirrorOf(va, length, (slot.Entry & ~Pte.AddrMask) | (Pte.Paddr(slot.Entry) + (va - slot.Va)));

    internal void KeepIoMem(IoMem io)
    {
        lock (_ioMems)
        {
            foreach (IoMem known in _ioMems)
                if (ReferenceEquals(known, io)) return;
            io.AddRef();
            _ioMems.Add(io);
        }
    }

    internal void ThrowIfDisposed()
    {
        if (IsDisposed) ThrowHelper.Disposed(nameof(VmSpace));
    }

    private void CheckRange(VaddrRange range)
    {
        ThrowIfDisposed();
        if (!Paging.IsAligned(range.Start) || !Paging.IsAligned(range.End))
            ThrowHelper.Argument($"range {range} is not page aligned", nameof(range));
        if (range.IsEmpty) ThrowHelper.UVm(UVmError.InvalidArgs, $"range {range} is empty");
        if (range.End > Size) ThrowHelper.UVm(UVmError.InvalidArgs, $"range {range} passes the end of the space (0x{Size:x})");
    }

    /// <summary>
    /// Unmaps everything, releases every frame and I/O region the space holds and returns the
    /// arena to the host. Waits for live cursors, and for fallible accesses in progress, of other
    /// threads; readers and writers of the space fail with <see cref="UVmError.PageFault"/>
    /// afterwards, without touching the host range (which the next space may reuse). A second
    /// call does nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">The calling thread holds a cursor of this space (the space is left as it was).</exception>
    public void Dispose()
    {
        if (_constructed && !IsDisposed && Spaces.Cursor.HeldByCurrentThreadOn(this))
            throw new InvalidOperationException("the calling thread holds a cursor of this space: dispose the cursor first");
        if (!_gate.Close()) return;
        GC.SuppressFinalize(this);
        ThreadAccess self = ThreadAccess.Current;
        if (ReferenceEquals(self.Active, this)) self.Active = null;

        // Accesses that got in before the gate closed finish (or fault, and give up on a
        // disposed space) while the arena still maps what they expect.
        _gate.WaitForAccessesToLeave();

        // Take the whole table (waiting for other cursors), empty it, then drop the arena in
        // one munmap: that is the flush after which the frames may be released.
        var frames = new List<ulong[]>();
        var cursor = new PtCursor(_pt, 0, Size, mutable: true);
        try
        {
            cursor.TakeAll(frames);
        }
        finally
        {
            cursor.Release();
        }
        // Frames go back only when nothing of the arena can reach them any more: if the host
        // refused both the unmap and the reset, they are leaked rather than handed to another owner.
        bool unreachable = _arena.Release();
        Budget.Retire();
        if (unreachable)
            foreach (ulong[] some in frames) Pool.ReleaseMany(some);
        Pool.Trim();
        lock (_ioMems)
        {
            foreach (IoMem io in _ioMems) io.Release();
            _ioMems.Clear();
        }
        Disposed?.Invoke(this);
    }

    /// <summary>
    /// Told of every space created and disposed, for whoever keeps books on spaces (UVm's metrics
    /// set it when the library loads); this layer knows nothing of them. <see cref="Disposed"/>
    /// is told after the arena went, before the space is forgotten by the layers above it.
    /// </summary>
    internal static Action<VmSpace>? Created, Disposed;

    /// <summary>The space's number: unique in the process, never reused, starting at 1.</summary>
    internal long Id => _gate.Id;
}
