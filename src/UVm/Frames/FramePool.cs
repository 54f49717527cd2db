using System.Runtime.CompilerServices;
using UVm.Io;

namespace UVm.Frames;

/// <summary>
/// The "physical memory" of UVm: one sparse <c>memfd</c> whose byte offsets are physical
/// addresses (<c>Paddr</c>), mapped once read-write at a private host address (the linear
/// map) so the library can read and write frame contents infallibly.
/// </summary>
/// <remarks>
/// <para>Frames are reference counted: each mapping in a page table and each handle
/// (<see cref="UFrame"/>, <see cref="USegment"/>) holds one reference. When the last goes, the
/// frame is queued to be hole-punched; punching happens in batches (<see cref="PunchBatchFrames"/>),
/// when an allocation finds no clean frame, or on <see cref="Trim"/>. Only punched (or never
/// used) frames are handed out again, which is why every allocated frame reads as zero.</para>
/// <para>Allocation works in chunks of 512 frames (2 MiB): small allocations fill one chunk
/// at a time so frames allocated together are contiguous in <c>Paddr</c>; a segment of 512 or
/// more frames starts on a chunk boundary.</para>
/// <para>Thread-safe. Allocation and freeing take one pool lock; reference counts are atomic.</para>
/// <para>The pool keeps the books and the lock; which frames are taken is a <see cref="FrameBitmap"/>,
/// where to carve from is its <see cref="ChunkChooser"/>, and everything the host does (the memfd,
/// the linear map, the metadata, punching, copies) is its <see cref="FrameFile"/>.</para>
/// </remarks>
public sealed unsafe partial class FramePool : IDisposable
{
    /// <summary>Frames per allocation chunk (2 MiB).</summary>
    public const int ChunkFrames = 512;

    /// <summary>Freed frames gathered before they are punched back to the host in one batch.</summary>
    public const int PunchBatchFrames = 512;

    /// <summary>Capacity of <see cref="Default"/>: 64 GiB of sparse address space in the memfd.</summary>
    public const ulong DefaultCapacity = 64UL << 30;

    private static readonly Lazy<FramePool> s_default = new(() => new FramePool(DefaultCapacity));

    private readonly object _lock = new();
    private readonly FrameBitmap _used;   // allocated or waiting to be punched; under _lock
    private readonly ChunkChooser _chooser; // under _lock
    private readonly List<ulong> _dirty = new(PunchBatchFrames); // freed frame numbers not yet punched
    private readonly FrameFile _file;
    private readonly byte* _linear;       // _file's mappings, kept here for the hot paths
    private readonly int* _refs;          // one reference count per frame, in anonymous host memory
    private long _inUse;
    private long _allocatedTotal;         // frames ever handed out, for UVm's metrics
    private int _disposed;

    /// <summary>The process-wide pool that spaces use unless given another (64 GiB capacity).</summary>
    public static FramePool Default => s_default.Value;

    /// <summary>
    /// Creates a pool of <paramref name="capacityBytes"/> bytes (a positive multiple of 2 MiB):
    /// a sparse memfd of that size, its linear map and its metadata. Nothing is resident until used.
    /// </summary>
    /// <exception cref="ArgumentException">The capacity is zero, unaligned or above 16 TiB.</exception>
    public FramePool(ulong capacityBytes)
    {
        if (capacityBytes == 0 || capacityBytes % (ChunkFrames * Paging.PageSize) != 0 || capacityBytes > (16UL << 40))
            ThrowHelper.Argument("capacity must be a positive multiple of 2 MiB, at most 16 TiB", nameof(capacityBytes));
        Capacity = capacityBytes;
        TotalFrames = capacityBytes / Paging.PageSize;
        _used = new FrameBitmap(TotalFrames);
        _chooser = new ChunkChooser(_used);
        _file = new FrameFile(capacityBytes, TotalFrames);
        _linear = _file.Linear;
        _refs = _file.Refs;
        Created?.Invoke(this);
    }

    /// <summary>
    /// Told of every pool created and disposed, for whoever keeps books on pools (UVm's metrics
    /// set it when the library loads); this layer knows nothing of them.
    /// </summary>
    internal static Action<FramePool>? Created, Disposed;

    /// <summary>Size of the pool in bytes.</summary>
    public ulong Capacity { get; }

    /// <summary>Number of frames the pool can hold.</summary>
    public ulong TotalFrames { get; }

    /// <summary>Frames whose reference count is above zero.</summary>
    public long FramesInUse => Volatile.Read(ref _inUse);

    /// <summary>Freed frames not yet punched back to the host.</summary>
    public int FramesAwaitingPunch { get { lock (_lock) return _dirty.Count; } }

    /// <summary>Bytes the host has actually allocated for the pool's memfd (<c>st_blocks</c>); falls after frees are punched.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public long HostAllocatedBytes
    {
        get
        {
            lock (_lock)
            {
                if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
                return _file.AllocatedBytes;
            }
        }
    }

    /// <summary>Number of <c>fallocate(PUNCH_HOLE)</c> calls made so far.</summary>
    public long PunchCalls => _file.PunchCalls;

    /// <summary>Frames handed out since the pool was created (for UVm's metrics).</summary>
    internal long FramesAllocatedTotal => Volatile.Read(ref _allocatedTotal);

    internal int Fd => _file.Fd;
    internal (ulong Dev, ulong Ino) FileIdentity => _file.Identity;
    internal byte* LinearBase => _linear;

    /// <summary>Allocates one frame. The handle holds its only reference.</summary>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> when the pool is exhausted; nothing is allocated.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public UFrame AllocFrame(FrameAllocOptions? options = null)
    {
        ulong frame = AllocRun(1);
        return new UFrame(this, frame << Paging.PageShift);
    }

    /// <summary>
    /// Allocates <paramref name="frameCount"/> frames contiguous in <c>Paddr</c>. The handle holds
    /// one reference to each.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="frameCount"/> is zero.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> when no such run is free (always, for more
    /// than <see cref="TotalFrames"/>); nothing is allocated.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public USegment AllocSegment(ulong frameCount, FrameAllocOptions? options = null)
    {
        if (frameCount == 0) ThrowHelper.OutOfRange("a segment holds at least one frame", nameof(frameCount));
        if (frameCount > TotalFrames)
            ThrowHelper.UVm(UVmError.NoMemory, $"the frame pool holds {TotalFrames} frames in all, fewer than {frameCount}");
        ulong first = AllocRun(frameCount);
        return new USegment(this, first << Paging.PageShift, frameCount);
    }

    /// <summary>Punches every freed frame back to the host now.</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed (its descriptor may by now be another file's).</exception>
    public void Trim()
    {
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            PunchDirtyLocked();
        }
    }

    /// <summary>The reference count of the frame at <paramref name="paddr"/> (0 when free).</summary>
    /// <param name="paddr">Any address inside the frame: <c>[0, Capacity)</c>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="paddr"/> is not below <see cref="Capacity"/>.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public int ReferenceCount(ulong paddr)
    {
        // Under the lock Dispose takes: the metadata cannot be unmapped while it is read.
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            if (paddr >= Capacity) ThrowHelper.OutOfRange($"0x{paddr:x} is not inside the pool [0, 0x{Capacity:x})", nameof(paddr));
            return ReferenceCountOf(paddr);
        }
    }

    /// <summary><see cref="ReferenceCount"/> for callers that hold a reference to the frame (so the pool is alive): no checks, no lock.</summary>
    internal int ReferenceCountOf(ulong paddr) => Volatile.Read(ref RefSlot(paddr));

    internal bool Owns(ulong paddr) => paddr < Capacity;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AddRef(ulong paddr)
    {
        int after = Interlocked.Increment(ref RefSlot(paddr));
        if (after <= 1) ThrowBadRef(paddr, after);
    }

    /// <summary>
    /// <see cref="AddRef"/> of the frame at <paramref name="paddr"/>, whose frame number is even,
    /// and of the one after it, with one atomic add on the two counts' 8 bytes (little-endian: the
    /// first count is the low half). A count cannot carry into the other: it would have to pass
    /// 2^31, and one at -1 is reported as a bad reference before anything else.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AddRefPair(ulong paddr)
    {
        System.Diagnostics.Debug.Assert(((paddr >> Paging.PageShift) & 1) == 0);
        // SAFETY: the counts of an even frame and the next lie in one 8-byte-aligned slot of the
        // page-aligned metadata mapping; both frames are the pool's (callers hold references).
        long after = Interlocked.Add(ref Unsafe.As<int, long>(ref RefSlot(paddr)), 0x1_0000_0001L);
        if ((int)after <= 1) ThrowBadRef(paddr, (int)after);
        if ((int)(after >> 32) <= 1) ThrowBadRef(paddr + Paging.PageSize, (int)(after >> 32));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Release(ulong paddr)
    {
        int after = Interlocked.Decrement(ref RefSlot(paddr));
        if (after <= 0) Freed(paddr, after);
    }

    /// <summary>Drops one reference of each frame in <paramref name="paddrs"/>, freeing under one lock.</summary>
    internal void ReleaseMany(ReadOnlySpan<ulong> paddrs)
    {
        List<ulong>? freed = null;
        foreach (ulong paddr in paddrs)
        {
            int after = Interlocked.Decrement(ref RefSlot(paddr));
            if (after < 0) ThrowBadRef(paddr, after);
            if (after == 0) (freed ??= new List<ulong>(paddrs.Length)).Add(paddr >> Paging.PageShift);
        }
        if (freed == null) return;
        lock (_lock)
        {
            _inUse -= freed.Count;
            _dirty.AddRange(freed);
            if (_dirty.Count >= PunchBatchFrames) PunchDirtyLocked();
        }
    }

    /// <summary>
    /// Copies the contents of the frames at <paramref name="sources"/> into the run of frames
    /// starting at <paramref name="firstDestination"/> (source <c>i</c> into destination frame
    /// <c>i</c>), through the memfd (<c>pwritev</c>) rather than the linear map, so the
    /// destination frames get their host pages without a host page-table entry in the linear
    /// map: mapping them into a space is then their only one, as a kernel's copy-on-write has.
    /// </summary>
    /// <remarks>The caller holds a reference to every frame and keeps the sources from changing
    /// (their mappings are read-only, or locked by its cursor).</remarks>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/> when the host cannot allocate the pages.</exception>
    internal void CopyFrames(ulong firstDestination, ReadOnlySpan<ulong> sources) => _file.CopyFrames(firstDestination, sources);

    /// <summary>Pointer into the linear map for <paramref name="paddr"/>.</summary>
    internal byte* LinearAddress(ulong paddr) => _linear + paddr;

    /// <summary><see cref="LinearAddress"/> as an address, for callers that hand it to the host.</summary>
    internal nint LinearPointer(ulong paddr) => (nint)(_linear + paddr);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref int RefSlot(ulong paddr)
    {
        // SAFETY: callers pass the Paddr of a frame of this pool (< Capacity), so the slot lies
        // inside the metadata mapping, which lives as long as the pool.
        return ref _refs[paddr >> Paging.PageShift];
    }

    private void Freed(ulong paddr, int after)
    {
        if (after < 0) ThrowBadRef(paddr, after);
        lock (_lock)
        {
            _inUse--;
            _dirty.Add(paddr >> Paging.PageShift);
            if (_dirty.Count >= PunchBatchFrames) PunchDirtyLocked();
        }
    }

    private static void ThrowBadRef(ulong paddr, int after) =>
        throw new InvalidOperationException($"frame 0x{paddr:x} reference count went to {after}: a reference was dropped twice or taken on a free frame");

    private ulong AllocRun(ulong count)
    {
        System.Diagnostics.Debug.Assert(count >= 1 && count <= TotalFrames);
        lock (_lock)
        {
            if (_disposed != 0) ThrowHelper.Disposed(nameof(FramePool));
            if (!_chooser.TryChoose(count, out ulong first))
            {
                PunchDirtyLocked();
                if (!_chooser.TryChoose(count, out first))
                    ThrowHelper.UVm(UVmError.NoMemory, $"the frame pool ({TotalFrames} frames, {_inUse} in use) has no free run of {count} frames");
            }
            _used.Mark(first, count);
            // SAFETY: TryChoose returned frames below TotalFrames; the metadata mapping holds one count per frame.
            for (ulong f = first; f < first + count; f++) _refs[f] = 1;
            _inUse += (long)count;
            _allocatedTotal += (long)count;
            return first;
        }
    }

    /// <summary>
    /// Punches the freed frames out of the memfd (coalesced into runs) and makes them allocatable.
    /// Never throws: a run the host refuses to punch stays dirty, unallocatable (its old contents
    /// must never reach another owner), and is tried again at the next punch.
    /// </summary>
    private void PunchDirtyLocked()
    {
        if (_dirty.Count == 0) return;
        _dirty.Sort();
        int i = 0, kept = 0;
        while (i < _dirty.Count)
        {
            ulong start = _dirty[i];
            int j = i + 1;
            while (j < _dirty.Count && _dirty[j] == _dirty[j - 1] + 1) j++;
            ulong len = (ulong)(j - i);
            if (_file.TryPunch(start, len)) _used.Clear(start, len);
            else
                for (int k = i; k < j; k++) _dirty[kept++] = _dirty[k]; // refused: stays dirty
            i = j;
        }
        _dirty.RemoveRange(kept, _dirty.Count - kept);
    }

    /// <summary>
    /// Releases the memfd, the linear map and the metadata. The default pool is never disposed.
    /// </summary>
    /// <exception cref="InvalidOperationException">Frames are still in use.</exception>
    public void Dispose()
    {
        if (ReferenceEquals(this, s_default.IsValueCreated ? s_default.Value : null))
            throw new InvalidOperationException("the default frame pool lives as long as the process");
        lock (_lock)
        {
            if (_disposed != 0) return;
            if (_inUse != 0) throw new InvalidOperationException($"{_inUse} frames of the pool are still in use");
            _disposed = 1;
            _file.Close();
        }
        Disposed?.Invoke(this);
    }

    internal VmReader<Infallible> ReaderOf(ulong paddr, ulong len) => new(LinearAddress(paddr), len);
    internal VmWriter<Infallible> WriterOf(ulong paddr, ulong len) => new(LinearAddress(paddr), len);
}
