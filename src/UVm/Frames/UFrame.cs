using UVm.Io;

namespace UVm.Frames;

/// <summary>
/// A handle to one frame of a <see cref="FramePool"/> ("untyped" memory a guest may see).
/// The handle holds one reference; <see cref="Dispose"/> drops it and <see cref="Clone"/>
/// takes another. When the last reference (handle or mapping) goes, the frame is freed.
/// </summary>
/// <remarks>A handle dropped without <see cref="Dispose"/> drops its reference when the garbage
/// collector finalizes it, so a forgotten handle (say, the frame of a query's result) delays the
/// frame's release, never leaks it. Dispose handles to give frames back promptly.</remarks>
public sealed class UFrame : IDisposable
{
    private int _disposed;

    internal UFrame(FramePool pool, ulong paddr)
    {
        Pool = pool;
        Paddr = paddr;
    }

    /// <summary>The pool the frame belongs to.</summary>
    public FramePool Pool { get; }

    /// <summary>The frame's physical address: its byte offset in the pool's memfd.</summary>
    public ulong Paddr { get; }

    /// <summary>Size of the frame in bytes (<see cref="Paging.PageSize"/>).</summary>
    public ulong Size => Paging.PageSize;

    /// <summary>References held on the frame right now (handles plus page-table mappings).</summary>
    /// <exception cref="ObjectDisposedException">The pool was disposed (the handle was disposed before it, or the count would be meaningless).</exception>
    public int ReferenceCount => Pool.ReferenceCount(Paddr);

    /// <summary>Takes another reference, returned as a new handle.</summary>
    /// <exception cref="ObjectDisposedException">This handle was disposed.</exception>
    public UFrame Clone()
    {
        ThrowIfDisposed();
        Pool.AddRef(Paddr);
        return new UFrame(Pool, Paddr);
    }

    /// <summary>An infallible reader of the frame's contents through the linear map.</summary>
    /// <remarks>The reader must not be used after the last handle to the frame is disposed.</remarks>
    public VmReader<Infallible> Reader()
    {
        ThrowIfDisposed();
        return Pool.ReaderOf(Paddr, Paging.PageSize);
    }

    /// <summary>An infallible writer of the frame's contents through the linear map.</summary>
    /// <remarks>The writer must not be used after the last handle to the frame is disposed.</remarks>
    public VmWriter<Infallible> Writer()
    {
        ThrowIfDisposed();
        return Pool.WriterOf(Paddr, Paging.PageSize);
    }

    /// <summary>Drops this handle's reference. A second call does nothing.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        GC.SuppressFinalize(this);
        Pool.Release(Paddr);
    }

    /// <summary>A handle dropped without <see cref="Dispose"/>: its reference goes now.</summary>
    ~UFrame()
    {
        // The reference keeps the frame in use, so the pool cannot have been disposed.
        if (Interlocked.Exchange(ref _disposed, 1) == 0) Pool.Release(Paddr);
    }

    internal void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0) ThrowHelper.Disposed(nameof(UFrame));
    }

    /// <inheritdoc/>
    public override string ToString() => $"UFrame(0x{Paddr:x})";
}
