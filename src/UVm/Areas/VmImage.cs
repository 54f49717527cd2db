using UVm.Frames;
using UVm.Interop;

namespace UVm.Areas;

/// <summary>
/// Read-only contents put into frames of a pool once (from bytes or a file), to be mapped by any
/// number of address spaces with <see cref="AreaBackend.Image"/>: every space that maps it (and
/// every fork or snapshot of one) shares the same frames; a write to a writable image area copies
/// the page for that space alone, and the image never changes.
/// </summary>
/// <remarks>
/// <para>The frames are one run contiguous in <c>Paddr</c>, so a mapped image area is one host
/// mapping. The image holds one reference to each frame and every mapped page one more, so the
/// pool's counts show one copy of the contents however many spaces map it.</para>
/// <para><see cref="Dispose"/> drops the image's own references: spaces that still map it keep
/// their pages (and their references) until they unmap them; the frames go back to the pool with
/// the last. A disposed image cannot be mapped again. An image dropped without
/// <see cref="Dispose"/> drops its references when the garbage collector finalizes its frames'
/// handle.</para>
/// <para>Thread-safe: mapping it from several threads and disposing it meanwhile is fine; a map
/// that has begun finishes with the frames it began with.</para>
/// </remarks>
public sealed class VmImage : IDisposable
{
    private const int FileChunk = 1 << 20;
    private readonly object _lock = new();
    private readonly USegment _frames;
    private int _leases;     // maps in progress (under _lock)
    private bool _disposed;  // under _lock

    private VmImage(USegment frames, ulong length)
    {
        _frames = frames;
        Length = length;
    }

    /// <summary>Bytes of contents; the last page is padded with zeros up to <see cref="Size"/>.</summary>
    public ulong Length { get; }

    /// <summary>Bytes of the image's frames: <see cref="Length"/> rounded up to a page.</summary>
    public ulong Size => _frames.Size;

    /// <summary>The pool the frames belong to: only spaces of this pool can map the image.</summary>
    public FramePool Pool => _frames.Pool;

    /// <summary>Whether <see cref="Dispose"/> was called.</summary>
    public bool IsDisposed { get { lock (_lock) return _disposed; } }

    /// <summary>An image of <paramref name="contents"/> in frames of <paramref name="pool"/> (null: <see cref="FramePool.Default"/>).</summary>
    /// <exception cref="ArgumentException"><paramref name="contents"/> is empty.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/>: the pool has no free run of frames that long;
    /// <see cref="UVmError.HostNoMemory"/> or <see cref="UVmError.HostRefused"/>: the host refused the pages. Nothing stays allocated.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public static VmImage FromBytes(ReadOnlySpan<byte> contents, FramePool? pool = null)
    {
        if (contents.IsEmpty) ThrowHelper.Argument("an image holds at least one byte", nameof(contents));
        USegment frames = Allocate((ulong)contents.Length, pool ?? FramePool.Default);
        try
        {
            WriteFrames(frames, 0, contents);
        }
        catch
        {
            frames.Dispose();
            throw;
        }
        return new VmImage(frames, (ulong)contents.Length);
    }

    /// <summary>An image of the file at <paramref name="path"/>, read once, in frames of <paramref name="pool"/> (null: <see cref="FramePool.Default"/>).</summary>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty, or the file is.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="path"/> is null.</exception>
    /// <exception cref="IOException">The file cannot be opened or read (<see cref="FileNotFoundException"/>,
    /// <see cref="DirectoryNotFoundException"/>...), or it shrank while being read.</exception>
    /// <exception cref="UnauthorizedAccessException">The file may not be read, or the path is a directory.</exception>
    /// <exception cref="UVmException">As for <see cref="FromBytes"/>: no run of frames that long, or the host refused. Nothing stays allocated.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public static VmImage FromFile(string path, FramePool? pool = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
        ulong length = (ulong)file.Length;
        if (length == 0) ThrowHelper.Argument($"the file '{path}' is empty: an image holds at least one byte", nameof(path));
        USegment frames = Allocate(length, pool ?? FramePool.Default);
        try
        {
            var buffer = new byte[(int)Math.Min(length, FileChunk)];
            for (ulong done = 0; done < length;)
            {
                int want = (int)Math.Min((ulong)buffer.Length, length - done);
                int got = RandomAccess.Read(file.SafeFileHandle, buffer.AsSpan(0, want), (long)done);
                if (got <= 0) throw new IOException($"the file '{path}' ended at byte {done} of the {length} it had when opened");
                WriteFrames(frames, done, buffer.AsSpan(0, got));
                done += (ulong)got;
            }
        }
        catch
        {
            frames.Dispose();
            throw;
        }
        return new VmImage(frames, length);
    }

    /// <summary>Drops the image's references to its frames; spaces that map it keep theirs. A second call does nothing.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            if (_leases != 0) return; // the last map in progress drops them (EndMap)
        }
        _frames.Dispose();
    }

    /// <summary>
    /// Begins a map of the image: until <see cref="EndMap"/>, the frames stay allocated even if
    /// the image is disposed meanwhile, so each page mapped takes a reference on a live frame.
    /// Returns the first frame's <c>Paddr</c>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The image was disposed.</exception>
    internal ulong BeginMap()
    {
        lock (_lock)
        {
            if (_disposed) ThrowHelper.Disposed(nameof(VmImage));
            _leases++;
            return _frames.Paddr;
        }
    }

    /// <summary>Ends a map begun by <see cref="BeginMap"/>; the last one after <see cref="Dispose"/> drops the image's references.</summary>
    internal void EndMap()
    {
        lock (_lock)
        {
            if (--_leases != 0 || !_disposed) return;
        }
        _frames.Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() => $"VmImage({Length} bytes at 0x{_frames.Paddr:x})";

    private static USegment Allocate(ulong length, FramePool pool)
    {
        if (length > pool.Capacity)
            ThrowHelper.UVm(UVmError.NoMemory, $"an image of {length} bytes does not fit in a pool of {pool.Capacity}");
        return pool.AllocSegment((length + Paging.PageSize - 1) / Paging.PageSize);
    }

    /// <summary>
    /// Writes <paramref name="bytes"/> at byte <paramref name="offset"/> of <paramref name="frames"/>
    /// through the memfd (<c>pwritev</c>), not the linear map: the frames get their host pages
    /// without a linear-map page-table entry each, as <see cref="FramePool.CopyFrames"/> does.
    /// </summary>
    private static unsafe void WriteFrames(USegment frames, ulong offset, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* start = bytes)
        {
            for (int done = 0; done < bytes.Length;)
            {
                var iov = new Libc.IoVec { Base = (nint)(start + done), Length = (nuint)(bytes.Length - done) };
                // SAFETY: the iovec names the rest of `bytes`, pinned by `fixed`; the destination
                // lies inside the segment's frames (offset + length <= Size), which this caller
                // holds a reference to, inside the pool's memfd.
                nint wrote = Libc.Pwritev(frames.Pool.Fd, &iov, 1, (long)(frames.Paddr + offset + (ulong)done));
                if (wrote <= 0) HostCall.Fail("pwritev of an image");
                done += (int)wrote;
            }
        }
    }
}
