using UVm.Io;

namespace UVm.Frames;

/// <summary>
/// A handle to a run of frames contiguous in <c>Paddr</c>. It holds one reference to each
/// frame; <see cref="Dispose"/> drops them all.
/// </summary>
/// <remarks>A handle dropped without <see cref="Dispose"/> drops its references when the garbage
/// collector finalizes it (see <see cref="UFrame"/>).</remarks>
public sealed class USegment : IDisposable
{
    private int _disposed;

    internal USegment(FramePool pool, ulong paddr, ulong frameCount)
    {
        Pool = pool;
        Paddr = paddr;
        FrameCount = frameCount;
    }

    /// <summary>The pool the frames belong to.</summary>
    public FramePool Pool { get; }

    /// <summary>Physical address of the first frame.</summary>
    public ulong Paddr { get; }

    /// <summary>Number of frames.</summary>
    public ulong FrameCount { get; }

    /// <summary>Size in bytes.</summary>
    public ulong Size => FrameCount * Paging.PageSize;

    /// <summary>A new handle to frame <paramref name="index"/> (one more reference on it).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not below <see cref="FrameCount"/>.</exception>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    public UFrame FrameAt(ulong index)
    {
        ThrowIfDisposed();
        if (index >= FrameCount) ThrowHelper.OutOfRange($"the segment has {FrameCount} frames", nameof(index));
        ulong paddr = Paddr + index * Paging.PageSize;
        Pool.AddRef(paddr);
        return new UFrame(Pool, paddr);
    }

    /// <summary>An infallible reader of the whole segment through the linear map.</summary>
    public VmReader<Infallible> Reader()
    {
        ThrowIfDisposed();
        return Pool.ReaderOf(Paddr, Size);
    }

    /// <summary>An infallible writer of the whole segment through the linear map.</summary>
    public VmWriter<Infallible> Writer()
    {
        ThrowIfDisposed();
        return Pool.WriterOf(Paddr, Size);
    }

    /// <summary>Drops this handle's reference to every frame. A second call does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        GC.SuppressFinalize(this);
        ReleaseAll();
    }

    /// <summary>A handle dropped without <see cref="Dispose"/>: its references go now.</summary>
    ~USegment()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) ReleaseAll();
    }

    private void ReleaseAll()
    {
        // In batches: a segment may hold billions of frames.
        Span<ulong> batch = stackalloc ulong[512];
        for (ulong first = 0; first < FrameCount; first += (ulong)batch.Length)
        {
            int n = (int)Math.Min((ulong)batch.Length, FrameCount - first);
            for (int i = 0; i < n; i++) batch[i] = Paddr + (first + (ulong)i) * Paging.PageSize;
            Pool.ReleaseMany(batch[..n]);
        }
    }

    internal void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowHelper.Disposed(nameof(USegment));
    }

    /// <inheritdoc/>
    public override string ToString() => $"USegment(0x{Paddr:x}, {FrameCount} frames)";
}
