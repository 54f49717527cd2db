using System.Runtime.CompilerServices;
using UVm.Faults;
using UVm.Io;
using UVm.Spaces;
using UVm.Interop;

namespace UVm.Areas;

/// <summary>
/// The mapping layer over a <see cref="VmSpace"/>: a set of non-overlapping areas, each with
/// rights and a backend, and the default page-fault handler that serves them (demand-zero with
/// fault-around, copy-on-write after <see cref="Fork"/>, shared writes for linear areas).
/// </summary>
/// <remarks>
/// <para>Thread-safe. Map, unmap, protect and fork take the area set's write lock; faults take
/// its read lock, so faults in different places resolve in parallel.</para>
/// <para>Rights: an area's flags are the most a page may have. A private page shared with a
/// forked space is mapped without W until its first write fault copies it (or takes it over
/// when no other space holds it). <see cref="Protect"/> removes rights at once; it adds W to a
/// private page lazily, on its next write fault.</para>
/// </remarks>
public sealed class AddressSpace : IDisposable
{
    private static readonly ConditionalWeakTable<VmSpace, AddressSpace> s_owners = new();

    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    private readonly AreaSet _areas;
    private readonly RegionChunks _chunks;
    private int _faultAround = 16;
    private int _disposed;

    /// <summary>Creates an empty address space over a new <see cref="VmSpace"/>.</summary>
    /// <exception cref="ArgumentException">Invalid <paramref name="options"/> (see <see cref="VmSpace(VmSpaceOptions)"/>).</exception>
    public AddressSpace(VmSpaceOptions? options = null) : this(new VmSpace(options), null)
    {
        Space.RegisterPageFaultHandler(DefaultHandler);
    }

    private AddressSpace(VmSpace space, AreaSet? areas)
    {
        Space = space;
        _areas = areas ?? new AreaSet(space.Size);
        _chunks = new RegionChunks(space.Pool);
        s_owners.Add(space, this);
    }

    /// <summary>The fault statistics of the address space that manages <paramref name="space"/>, if one does (until it is disposed).</summary>
    internal static AreaStats? StatsOf(VmSpace space) => s_owners.TryGetValue(space, out AddressSpace? owner) ? owner.Stats : null;

    /// <summary>The space this layer manages. Map frames into it directly only outside every area.</summary>
    public VmSpace Space { get; }

    /// <summary>What the default page-fault handler did.</summary>
    public AreaStats Stats { get; } = new();

    /// <summary>
    /// The fault-around window, in pages: the aligned window around a faulting page, cut to the
    /// area. A demand-zero fault fills the window's unmapped pages; a write fault on a page
    /// shared after a fork copies the window's shared pages and gives write access back to
    /// those it holds the last reference of. Default 16; 1 resolves the faulting page alone.
    /// Larger windows mean fewer faults and fewer host mappings, at the price of frames for
    /// pages not (yet) touched.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Not a power of two between 1 and 512.</exception>
    public int FaultAroundPages
    {
        get => _faultAround;
        set
        {
            if (value < 1 || value > 512 || (value & (value - 1)) != 0)
                ThrowHelper.OutOfRange("fault-around must be a power of two from 1 to 512 pages", nameof(value));
            _faultAround = value;
        }
    }

    /// <summary>The areas, in address order.</summary>
    public IReadOnlyList<VmArea> Areas
    {
        get
        {
            _lock.EnterReadLock();
            try { return _areas.ToArray(); }
            finally { _lock.ExitReadLock(); }
        }
    }

    /// <summary>
    /// Maps <paramref name="length"/> bytes with <paramref name="backend"/> and returns the
    /// address: <see cref="VmMapOptions.Addr"/> if given, else the lowest free range aligned to
    /// <see cref="VmMapOptions.Align"/>. Linear backends and populated allocations are mapped
    /// before this returns; lazy allocations on first access.
    /// </summary>
    /// <exception cref="ArgumentException">Length or address unaligned; alignment not a power of two of at least a page; <see cref="VmMapOptions.CanOverwrite"/> without an address; a linear backend's offset unaligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: zero length, range past the space or overflowing, a linear backend too small;
    /// <see cref="UVmError.MapAlreadyMappedVaddr"/>: the fixed range overlaps an area and overwriting was not allowed (nothing changes);
    /// <see cref="UVmError.NoMemory"/>: no free range, or no frames for a populated area (nothing stays mapped).</exception>
    public ulong Map(ulong length, AreaBackend backend, VmMapOptions options)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(options);
        ThrowIfDisposed();
        if (length == 0) ThrowHelper.UVm(UVmError.InvalidArgs, "cannot map zero bytes");
        if (!Paging.IsAligned(length)) ThrowHelper.Argument("the length must be page aligned", nameof(length));
        ulong align = options.Align;
        if (align < Paging.PageSize || (align & (align - 1)) != 0) ThrowHelper.Argument("the alignment must be a power of two of at least a page", nameof(options));
        if (options.CanOverwrite && options.Addr is null) ThrowHelper.Argument("overwriting needs a fixed address", nameof(options));
        if (options.Addr is { } fixedAddr && (fixedAddr & (align - 1)) != 0) ThrowHelper.Argument("the address is not aligned as asked", nameof(options));
        CheckBackend(backend, length);

        _lock.EnterWriteLock();
        try
        {
            VaddrRange range;
            if (options.Addr is { } addr)
            {
                range = VaddrRange.FromLength(addr, length);
                if (range.End > Space.Size) ThrowHelper.UVm(UVmError.InvalidArgs, $"{range} passes the end of the space");
                if (_areas.Overlaps(range))
                {
                    if (!options.CanOverwrite) ThrowHelper.UVm(UVmError.MapAlreadyMappedVaddr, $"{range} overlaps an existing area");
                    UnmapLocked(range);
                }
            }
            else
            {
                if (!_areas.TryFindFree(length, align, out range))
                    ThrowHelper.UVm(UVmError.NoMemory, $"no free range of 0x{length:x} bytes aligned to 0x{align:x}");
            }
            var area = new VmArea(range, options.Flags, backend);
            try
            {
                MapAtOnce(area);
            }
            catch
            {
                // Back to the reserved state the range had, so no budget check can refuse the undo.
                using (CursorMut c = Space.CursorMut(range)) c.Unmap(range.Length, checkBudget: false);
                _chunks.ReleaseUnused(range, _areas.Overlaps); // else a failed populate keeps its chunks from every later allocation
                throw;
            }
            _areas.Add(area);
            return range.Start;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Unmaps <paramref name="range"/>: areas inside go, areas across its ends are split, and
    /// every frame mapped there is released after the host no longer maps it. Holes are fine.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space.</exception>
    public void Unmap(VaddrRange range)
    {
        CheckRange(range);
        _lock.EnterWriteLock();
        try { UnmapLocked(range); }
        finally { _lock.ExitWriteLock(); }
    }

    /// <summary>
    /// Sets the rights of every area part inside <paramref name="range"/> to <paramref name="flags"/>,
    /// splitting areas at the range's ends, and updates the mapped pages and the host.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space.</exception>
    public void Protect(VaddrRange range, PageFlags flags)
    {
        CheckRange(range);
        _lock.EnterWriteLock();
        try
        {
            List<VmArea> areas = _areas.SplitAround(range);
            if (areas.Count == 0) return;
            try
            {
                // One cursor, so one batch: the host refusing any of it undoes all of it.
                using CursorMut c = Space.CursorMut(new VaddrRange(areas[0].Range.Start, areas[^1].Range.End));
                foreach (VmArea area in areas)
                {
                    _areas.Replace(area with { Flags = flags });
                    bool privatePages = area.Backend is AreaBackend.Alloc;
                    c.Jump(area.Range.Start);
                    while (c.VirtAddr < area.Range.End &&
                           c.ProtectNext(area.Range.End - c.VirtAddr, (ref PageFlags f, ref CachePolicy _) =>
                           {
                               // Private pages regain W on their next write fault, which checks for sharing.
                               PageFlags keep = f & (PageFlags.Accessed | PageFlags.Dirty | PageFlags.Avail1 | PageFlags.Avail2);
                               PageFlags rights = privatePages && (f & PageFlags.W) == 0 ? flags & ~PageFlags.W : flags;
                               f = keep | (rights & PageFlags.RWX);
                           }) is not null)
                    {
                    }
                }
            }
            catch
            {
                foreach (VmArea area in areas) _areas.Replace(area); // the table was left as it was
                throw;
            }
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>The slots of <paramref name="range"/>: mapped items and holes. Dispose the items.</summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space.</exception>
    public IReadOnlyList<(VaddrRange Range, VmQueriedItem? Item)> QueryRange(VaddrRange range)
    {
        CheckRange(range);
        using Cursor c = Space.Cursor(range);
        return c.ToList();
    }

    /// <summary>Unmaps every area.</summary>
    public void Clear()
    {
        ThrowIfDisposed();
        Unmap(new VaddrRange(0, Space.Size));
    }

    /// <summary>
    /// Forks the address space copy-on-write: the child has the same areas and mappings, every
    /// private frame shared read-only by both until one of them writes it; nothing is copied now.
    /// </summary>
    public AddressSpace Fork()
    {
        ThrowIfDisposed();
        _lock.EnterWriteLock();
        try
        {
            VmSpace childSpace = Space.ForkCopyOnWrite();
            var child = new AddressSpace(childSpace, _areas.Clone()) { _faultAround = _faultAround };
            return child;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Resolves every page of <paramref name="range"/> for <paramref name="access"/> now (like
    /// <c>MAP_POPULATE</c>) and fills the host's page tables, so later direct access through
    /// host pointers cannot fault.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space;
    /// <see cref="UVmError.PageFault"/>: a page cannot be resolved for that access (no area, not allowed, or no frame left).</exception>
    public void Prefault(VaddrRange range, PageFaultAccess access)
    {
        CheckRange(range);
        PageFlags need = FaultRights.Needed(access);
        ulong va = range.Start;
        int attempts = 0;
        while (va < range.End)
        {
            PageSlot slot;
            using (Cursor c = Space.Cursor(new VaddrRange(va, va + Paging.PageSize))) slot = c.QuerySlot();
            if (slot.Allows(need))
            {
                va = slot.Va + slot.Size;
                attempts = 0;
                continue;
            }
            if (++attempts > FallibleIo.MaxRetriesWithoutProgress || !Space.HandlePageFault(va, access))
                throw new UVmException(UVmError.PageFault, $"page 0x{va:x} cannot be resolved for {access}");
        }
        int advice = access == PageFaultAccess.Write ? Libc.MADV_POPULATE_WRITE : Libc.MADV_POPULATE_READ;
        // Under a cursor over the range, taken on a live space: the advice lands in this space's
        // arena, never in whatever the host puts at its addresses after a racing Dispose. Best
        // effort: a page another thread unmapped meanwhile simply is not populated.
        using (Space.Cursor(range))
            Libc.Madvise(Space.HostBase + (nint)range.Start, (nuint)range.Length, advice);
    }

    /// <summary>Disposes the space: every frame is released. A second call does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        GC.SuppressFinalize(this);
        Space.Dispose();
        _chunks.Dispose();
        s_owners.Remove(Space);
    }

    /// <summary>
    /// An address space dropped without <see cref="Dispose"/>: its chunk reservations go back to
    /// the pool (its space, unreachable too, gives back its frames in its own finalizer).
    /// </summary>
    ~AddressSpace()
    {
        _chunks?.Dispose(); // null when the constructor threw
    }

    // ---- the default page-fault handler -------------------------------------------------

    private static bool DefaultHandler(VmSpace space, in PageFaultInfo info) =>
        s_owners.TryGetValue(space, out AddressSpace? owner) && owner.HandleFault(info);

    private bool HandleFault(in PageFaultInfo info)
    {
        if (!_lock.TryEnterReadLock(Timeout.Infinite)) return false;
        try
        {
            if (_disposed != 0 || !_areas.TryFind(info.Address, out VmArea? area))
            {
                Interlocked.Increment(ref Stats._refused);
                return false;
            }
            PageFlags need = FaultRights.Needed(info.Access);
            if ((area.Flags & need) == 0)
            {
                Interlocked.Increment(ref Stats._refused);
                return false;
            }
            ulong page = Paging.AlignDown(info.Address, Paging.PageSize);
            using CursorMut c = Space.CursorMut(new VaddrRange(page, page + Paging.PageSize));
            PageSlot slot = c.QuerySlot();
            if (!slot.IsMapped)
            {
                c.Dispose();
                return area.Backend is AreaBackend.Alloc ? DemandZero(area, page) : RemapLinear(area, page);
            }
            bool privatePage = area.Backend is AreaBackend.Alloc && slot.IsTracked;
            if (info.Access != PageFaultAccess.Write || !privatePage)
            {
                // Rights the area allows but the page lost (a shared page write-protected by a fork,
                // or rights given back by Protect). A private page gets W only through the copy path.
                PageFlags add = area.Flags & PageFlags.RWX;
                if (privatePage) add &= ~PageFlags.W;
                c.ProtectNext(Paging.PageSize, (ref PageFlags f, ref CachePolicy _) => f |= add);
                Interlocked.Increment(ref Stats._sharedWrites);
                return true;
            }
            c.Dispose();
            return CopyOnWrite(area, page);
        }
        catch (UVmException e) when (e.Error is UVmError.NoMemory or UVmError.HostMappingLimit or UVmError.HostNoMemory or UVmError.HostRefused)
        {
            // Out of frames or of host mappings, or the host refused: the access fails like any
            // unresolved fault, so a fallible copy returns its exact byte count with PageFault
            // instead of throwing mid-copy. Nothing was mapped for the faulting page (a refused
            // map drops its frame; a refused dispatch undoes the cursor's batch).
            return false;
        }
        catch (ObjectDisposedException) when (Space.IsDisposed)
        {
            return false; // disposed while resolving: the access fails as a fault
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>The fault-around window of <paramref name="page"/>: the aligned <see cref="FaultAroundPages"/> pages around it, cut to the area.</summary>
    private VaddrRange WindowOf(VmArea area, ulong page)
    {
        ulong window = (ulong)_faultAround * Paging.PageSize;
        ulong start = Paging.AlignDown(page, window);
        return new VaddrRange(Math.Max(area.Range.Start, start), Math.Min(area.Range.End, start + window));
    }

    /// <summary>
    /// Resolves a write to private page <paramref name="page"/> that lacks W: it gets a copy of
    /// its frame, or write access to it when it holds the frame's last reference. The same is
    /// done around it, in its fault-around window: shared pages are copied, pages already
    /// private get W back.
    /// </summary>
    /// <remarks>
    /// Why around: a copy goes to the writer's reservation, not beside the shared frames, so
    /// pages copied one by one alternate with pages left shared and every alternation costs a
    /// host mapping (VMA); so do pages given W one by one amid read-only neighbours. Random
    /// writes to half the pages of a forked 1 GiB would pass <c>vm.max_map_count</c>. Resolved a
    /// window at a time, runs are at least a window long. The price is a copy of up to a window
    /// of pages that nobody has written yet (<see cref="FaultAroundPages"/> = 1 turns it off).
    /// </remarks>
    private bool CopyOnWrite(VmArea area, ulong page)
    {
        VaddrRange window = WindowOf(area, page);
        PageProperty prop = PageProperty.New(area.Flags);
        bool? copiedPage = null; // how the faulting page itself was resolved: copied, or taken over
        int takenOver = 0, copied = 0;
        var copies = new List<(ulong Va, ulong Old, ulong New)>(); // New = NoCopy: a takeover
        int handedOver = 0; // copies whose new frame a mapping owns (or dropped) by now
        using (CursorMut c = Space.CursorMut(window))
        {
            try
            {
                // The faulting page first: the window is a bonus, and stops at the first refusal.
                foreach (ulong va in WindowOrder(window, page))
                {
                    c.Jump(va);
                    PageSlot slot = c.QuerySlot();
                    if (!slot.IsTracked || slot.Allows(PageFlags.W)) continue;
                    ulong old = slot.Paddr;
                    try
                    {
                        // The last reference gets write access, no copy; else a frame for the copy.
                        copies.Add((va, old, Space.Pool.ReferenceCountOf(old) == 1 ? NoCopy : _chunks.AllocFor(va)));
                    }
                    catch (UVmException e) when ((e.Error is UVmError.NoMemory or UVmError.HostMappingLimit) && va != page)
                    {
                        break;
                    }
                }
                // Contents through the memfd, so the new frames' only host page-table entries are
                // the ones their mappings install; then the changes, in address order so runs merge.
                copies.Sort((x, y) => x.Va.CompareTo(y.Va));
                CopyContents(copies);
                while (handedOver < copies.Count)
                {
                    // From here the new frame is the mapping's (MapOwnedFrame drops it if refused).
                    (ulong va, _, ulong fresh) = copies[handedOver++];
                    c.Jump(va);
                    try
                    {
                        if (fresh == NoCopy)
                        {
                            c.ProtectNext(Paging.PageSize, (ref PageFlags f, ref CachePolicy _) => f |= PageFlags.W);
                            takenOver++;
                            if (va == page) copiedPage = false;
                            continue;
                        }
                        c.MapOwnedFrame(fresh, prop, populate: true);
                        copied++;
                        if (va == page) copiedPage = true;
                    }
                    catch (UVmException e) when (e.Error == UVmError.HostMappingLimit && va != page)
                    {
                        // Refused (the frame is dropped): this neighbour stays shared.
                    }
                }
            }
            catch
            {
                for (int i = handedOver; i < copies.Count; i++)
                    if (copies[i].New != NoCopy) Space.Pool.Release(copies[i].New);
                throw;
            }
        }
        // A page another thread made writable meanwhile counts as rights restored (see PageFaultCounts).
        if (copiedPage == true) Interlocked.Increment(ref Stats._cowCopies);
        else if (copiedPage == false) Interlocked.Increment(ref Stats._cowTakeovers);
        Interlocked.Add(ref Stats._cowPages, copied);
        Interlocked.Add(ref Stats._cowTakeoverPages, takenOver);
        return true;
    }

    /// <summary>Stands for "no new frame" in <see cref="CopyOnWrite"/>'s list: the page is taken over (0 is a valid frame address).</summary>
    private const ulong NoCopy = ulong.MaxValue;

    /// <summary>The pages of <paramref name="window"/>, <paramref name="page"/> first, then the others in address order.</summary>
    private static IEnumerable<ulong> WindowOrder(VaddrRange window, ulong page)
    {
        yield return page;
        for (ulong va = window.Start; va < window.End; va += Paging.PageSize)
            if (va != page) yield return va;
    }

    /// <summary>Copies each old frame into its new one (takeovers have none), one host call per run of new frames contiguous in <c>Paddr</c>.</summary>
    private void CopyContents(List<(ulong Va, ulong Old, ulong New)> copies)
    {
        Span<ulong> sources = stackalloc ulong[copies.Count];
        for (int i = 0; i < copies.Count; i++) sources[i] = copies[i].Old;
        int run = 0;
        for (int i = 1; i <= copies.Count; i++)
        {
            bool continues = i < copies.Count && copies[i - 1].New != NoCopy && copies[i].New == copies[i - 1].New + Paging.PageSize;
            if (continues) continue;
            if (copies[run].New != NoCopy) Space.Pool.CopyFrames(copies[run].New, sources[run..i]);
            run = i;
        }
    }

    /// <summary>Maps zeroed frames over the unmapped pages of the fault-around window of <paramref name="page"/>.</summary>
    private bool DemandZero(VmArea area, ulong page)
    {
        (ulong start, ulong end) = WindowOf(area, page);
        PageProperty prop = PageProperty.New(area.Flags);
        int filled = 0;
        using (CursorMut c = Space.CursorMut(new VaddrRange(start, end)))
        {
            for (ulong va = start; va < end; va += Paging.PageSize)
            {
                c.Jump(va);
                if (c.QuerySlot().IsMapped) continue;
                try
                {
                    c.MapOwnedFrame(_chunks.AllocFor(va), prop, populate: true);
                    filled++;
                }
                catch (UVmException e) when ((e.Error is UVmError.NoMemory or UVmError.HostMappingLimit) && va != page)
                {
                    // The window is a bonus; only the faulting page must succeed. Out of frames or
                    // host mappings, go straight to it, and stop after it.
                    if (va > page) break;
                    va = page - Paging.PageSize;
                }
            }
        }
        Interlocked.Increment(ref Stats._demandZero);
        Interlocked.Add(ref Stats._demandZeroPages, filled);
        return true;
    }

    /// <summary>Maps the linear page again (it can go missing only if someone unmapped it through the space directly).</summary>
    private bool RemapLinear(VmArea area, ulong page)
    {
        MapAtOnce(area.Slice(page, page + Paging.PageSize));
        return true;
    }

    // ---- the area set ---------------------------------------------------------------------

    private void MapAtOnce(VmArea area)
    {
        PageProperty prop = PageProperty.New(area.Flags);
        switch (area.Backend)
        {
            case AreaBackend.Alloc { Populate: true }:
                using (CursorMut c = Space.CursorMut(area.Range))
                {
                    for (ulong va = area.Range.Start; va < area.Range.End; va += Paging.PageSize)
                        c.MapOwnedFrame(_chunks.AllocFor(va), prop, populate: false);
                }
                break;
            case AreaBackend.LinearFrames f:
                using (CursorMut c = Space.CursorMut(area.Range))
                {
                    ulong first = f.Offset / Paging.PageSize;
                    for (ulong i = 0; i < area.Range.Length / Paging.PageSize; i++)
                    {
                        using var frame = f.Segment.FrameAt(first + i);
                        c.Map(frame, prop);
                    }
                }
                break;
            case AreaBackend.LinearIoMem io:
                using (CursorMut c = Space.CursorMut(area.Range)) c.MapIoMem(io.IoMem, prop, area.Range.Length, io.Offset);
                break;
        }
    }

    private void UnmapLocked(VaddrRange range)
    {
        _areas.Remove(range);
        using (CursorMut c = Space.CursorMut(range)) c.Unmap(range.Length);
        _chunks.ReleaseUnused(range, _areas.Overlaps);
    }

    private void CheckBackend(AreaBackend backend, ulong length)
    {
        switch (backend)
        {
            case AreaBackend.LinearFrames f:
                if (!Paging.IsAligned(f.Offset)) ThrowHelper.Argument("the linear offset must be page aligned", nameof(backend));
                if (!ReferenceEquals(f.Segment.Pool, Space.Pool)) ThrowHelper.Argument("the segment belongs to another pool", nameof(backend));
                if (f.Offset > f.Segment.Size || f.Segment.Size - f.Offset < length)
                    ThrowHelper.UVm(UVmError.InvalidArgs, "the segment is smaller than the mapping");
                break;
            case AreaBackend.LinearIoMem io:
                if (!Paging.IsAligned(io.Offset)) ThrowHelper.Argument("the linear offset must be page aligned", nameof(backend));
                if (io.Offset > io.IoMem.Size || io.IoMem.Size - io.Offset < length)
                    ThrowHelper.UVm(UVmError.InvalidArgs, "the I/O memory is smaller than the mapping");
                break;
        }
    }

    private void CheckRange(VaddrRange range)
    {
        ThrowIfDisposed();
        if (!Paging.IsAligned(range.Start) || !Paging.IsAligned(range.End)) ThrowHelper.Argument($"range {range} is not page aligned", nameof(range));
        if (range.IsEmpty) ThrowHelper.UVm(UVmError.InvalidArgs, $"range {range} is empty");
        if (range.End > Space.Size) ThrowHelper.UVm(UVmError.InvalidArgs, $"range {range} passes the end of the space");
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowHelper.Disposed(nameof(AddressSpace));
    }
}
