using System.Runtime.CompilerServices;
using UVm.Spaces;

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
public sealed partial class AddressSpace : IDisposable
{
    private static readonly ConditionalWeakTable<VmSpace, AddressSpace> s_owners = new();

    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    private readonly AreaSet _areas;
    private readonly RegionChunks _chunks;
    private readonly WriteWatch _watch = new();
    private readonly FaultKinds _kinds = new(); // guard areas, for the space's classifier (no lock)
    private int _faultAround = 16;
    private int _disposed;

    /// <summary>Creates an empty address space over a new <see cref="VmSpace"/>.</summary>
    /// <exception cref="ArgumentException">Invalid <paramref name="options"/> (see <see cref="VmSpace(VmSpaceOptions)"/>).</exception>
    /// <remarks>The space's faults are this layer's from then on: <see cref="VmSpace.RegisterPageFaultHandler"/>
    /// on it throws <see cref="InvalidOperationException"/> (pages filled by your code are <see cref="AreaBackend.OnDemand"/> areas).</remarks>
    public AddressSpace(VmSpaceOptions? options = null) : this(new VmSpace(options), null)
    {
    }

    private AddressSpace(VmSpace space, AreaSet? areas)
    {
        Space = space;
        _areas = areas ?? new AreaSet(space.Size);
        _chunks = new RegionChunks(space.Pool);
        _kinds.Refresh(_areas);
        s_owners.Add(space, this);
        space.Manage($"an {nameof(AddressSpace)}", DefaultHandler, _kinds.At); // a forked space has the handler already
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
    /// <exception cref="ArgumentException">Length or address unaligned; alignment not a power of two of at least a page; <see cref="VmMapOptions.CanOverwrite"/> without an address;
    /// a linear or image backend's offset unaligned; a segment or image of another pool than the space's; an on-demand backend without a callback, an image backend without an image.</exception>
    /// <exception cref="ObjectDisposedException">The address space, or an image backend's image, was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: zero length, range past the space or overflowing, a linear or image backend too small;
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
        backend.Validate(Space, length);

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
                backend.MapAtOnce(this, area);
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
            if (!_kinds.IsEmpty || backend.UnresolvedKind is not null) _kinds.Refresh(_areas); // an overwrite may have removed some too
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Unmaps <paramref name="range"/>: areas inside go, areas across its ends are split, and
    /// every frame mapped there is released after the host no longer maps it. Holes are fine.
    /// </summary>
    /// <exception cref="ArgumentException">The range is not page aligned.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.InvalidArgs"/>: empty or past the space;
    /// <see cref="UVmError.HostMappingLimit"/>, <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>:
    /// refused (areas, pages and contents as before).</exception>
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
                    bool privatePages = area.Backend.HasPrivatePages, watching = _watch.IsActive;
                    c.Jump(area.Range.Start);
                    while (c.VirtAddr < area.Range.End &&
                           c.ProtectNext(area.Range.End - c.VirtAddr, (ref PageFlags f, ref CachePolicy _) =>
                           {
                               // Private pages regain W on their next write fault, which checks for sharing; so
                               // does every page while a write watch runs, which checks whether it is watched.
                               PageFlags keep = f & (PageFlags.Accessed | PageFlags.Dirty | PageFlags.Avail1 | PageFlags.Avail2);
                               PageFlags rights = (privatePages || watching) && (f & PageFlags.W) == 0 ? flags & ~PageFlags.W : flags;
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
    /// private frame shared read-only by both until one of them writes it; nothing is copied now,
    /// but the pages the host copied (host copies of a snapshot's pages, see
    /// <see cref="VmSpaceOptions.HostCopies"/>), which get frames of their own first.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The address space was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> (no frame for a host copy), <see cref="UVmError.HostMappingLimit"/>,
    /// <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>: refused; the address space has its contents,
    /// areas and mappings as before (its host copies may have become frames of its own).</exception>
    public AddressSpace Fork()
    {
        ThrowIfDisposed();
        _lock.EnterWriteLock();
        try
        {
            VmSpace childSpace = Space.ForkCopyOnWrite();
            return new AddressSpace(childSpace, _areas.Clone()) { _faultAround = _faultAround };
        }
        finally
        {
            _lock.ExitWriteLock();
        }
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

    // ---- helpers, under the area lock or before it ----------------------------------------

    private void UnmapLocked(VaddrRange range)
    {
        VmArea[] before = _areas.ToArray();
        _areas.Remove(range);
        try
        {
            using (CursorMut c = Space.CursorMut(range)) c.Unmap(range.Length);
        }
        catch
        {
            _areas.ReplaceAll(before); // refused: the table maps what it mapped, so the areas stay
            throw;
        }
        finally
        {
            if (!_kinds.IsEmpty) _kinds.Refresh(_areas);
        }
        _chunks.ReleaseUnused(range, _areas.Overlaps);
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
