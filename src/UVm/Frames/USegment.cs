using UVm.Io;

namespace UVm.Frames;

/// <summary>
/// A handle to a run of frames contiguous in <c>Paddr</c>. It holds one reference to each
/// frame; <see cref="Dispose"/> drops them all.
/// </summary>
/// <remarks>Not finalizable: a handle that is never disposed keeps its frames allocated.</remarks>
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
        ulong[] paddrs = new ulong[FrameCount];
        for (ulong i = 0; i < FrameCount; i++) paddrs[i] = Paddr + i * Paging.PageSize;
        Pool.ReleaseMany(paddrs);
    }

    internal void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowHelper.Disposed(nameof(USegment));
    }

    /// <inheritdoc/>
    public override string ToString() => $"USegment(0x{Paddr:x}, {FrameCount} frames)";
}
