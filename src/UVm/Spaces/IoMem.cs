using UVm.Host;
using UVm.Interop;

namespace UVm.Spaces;

/// <summary>
/// Untracked memory: a region of a file descriptor other than the frame pool (a second memfd,
/// a regular file), mapped into spaces without per-page reference counting.
/// </summary>
/// <remarks>
/// <para>Each region gets a range of physical addresses of its own, above any frame pool
/// (from 64 TiB up, 2 MiB aligned), so page-table entries can name it. The region keeps a
/// duplicate of the descriptor; it is closed when the creator has disposed the region and
/// every space that mapped it has been disposed: a space keeps
/// a mapped region until the space itself goes, even after unmapping every page of it.</para>
/// </remarks>
public sealed class IoMem : IDisposable
{
    private const ulong PaddrBase = 1UL << 46;
    /// <summary>End of the physical addresses a page-table entry can name (its 52-bit address field).</summary>
    private const ulong PaddrEnd = 1UL << 52;
    private static ulong s_nextPaddr = PaddrBase;
    private int _refs = 1;
    private int _creatorDisposed;

    /// <summary>The largest region: 1 PiB.</summary>
    public const ulong MaxSize = 1UL << 50;

    private IoMem(int fd, ulong fileOffset, ulong size)
    {
        Fd = fd;
        FileOffset = fileOffset;
        Size = size;
        Identity = HostCall.Identity(fd);
        int flags = Libc.Fcntl(fd, Libc.F_GETFL);
        if (flags < 0) HostCall.Fail("fcntl(F_GETFL) of the I/O memory descriptor");
        IsWritable = (flags & Libc.O_ACCMODE) == Libc.O_RDWR;
        IsReadable = (flags & Libc.O_ACCMODE) != Libc.O_WRONLY;
        Paddr = ReservePaddrs(size);
    }

    /// <summary>
    /// Takes the next range of physical addresses for a region of <paramref name="size"/> bytes
    /// (2 MiB aligned, a 2 MiB gap after it), never reused, never past what an entry can name.
    /// </summary>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> when the range is used up.</exception>
    private static ulong ReservePaddrs(ulong size)
    {
        // size <= MaxSize, so none of this can wrap.
        ulong span = (size + Paging.HugePageSize - 1) & ~(Paging.HugePageSize - 1);
        ulong next = Volatile.Read(ref s_nextPaddr);
        while (true)
        {
            if (PaddrEnd - next < span + Paging.HugePageSize)
                ThrowHelper.UVm(UVmError.NoMemory, "the physical addresses for I/O memory are used up");
            ulong seen = Interlocked.CompareExchange(ref s_nextPaddr, next + span + Paging.HugePageSize, next);
            if (seen == next) return next;
            next = seen;
        }
    }

    /// <summary>Whether the descriptor was opened for writing (read-write): only then can the region be mapped writable.</summary>
    internal bool IsWritable { get; }

    /// <summary>Whether the descriptor was opened for reading: only then can the region be mapped at all.</summary>
    internal bool IsReadable { get; }

    /// <summary>The physical address of the region's first byte (2 MiB aligned).</summary>
    public ulong Paddr { get; }

    /// <summary>Size in bytes.</summary>
    public ulong Size { get; }

    /// <summary>Offset of the region in its file.</summary>
    public ulong FileOffset { get; }

    internal int Fd { get; }
    internal (ulong Dev, ulong Ino) Identity { get; }

    /// <summary>
    /// A region of <paramref name="size"/> bytes of the file <paramref name="fd"/> from
    /// <paramref name="fileOffset"/>. The descriptor is duplicated; the caller keeps its own.
    /// </summary>
    /// <exception cref="ArgumentException">Offset or size unaligned, or size zero.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is above <see cref="MaxSize"/>, or
    /// <c>fileOffset + size</c> passes the largest file offset (2^63 - 1).</exception>
    /// <exception cref="InvalidOperationException">The descriptor is not open.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> when the physical addresses for I/O memory are used up;
    /// <see cref="UVmError.HostRefused"/> when the host refuses to duplicate the descriptor (descriptor limit).</exception>
    public static IoMem FromFile(int fd, ulong fileOffset, ulong size)
    {
        if (!Paging.IsAligned(fileOffset)) ThrowHelper.Argument("the offset must be page aligned", nameof(fileOffset));
        if (size == 0 || !Paging.IsAligned(size)) ThrowHelper.Argument("the size must be a positive multiple of the page size", nameof(size));
        if (size > MaxSize) ThrowHelper.OutOfRange($"a region is at most 0x{MaxSize:x} bytes", nameof(size));
        if (fileOffset > (ulong)long.MaxValue - size) ThrowHelper.OutOfRange("the region passes the largest file offset", nameof(fileOffset));
        int dup = Libc.Dup(fd);
        if (dup < 0) HostCall.Fail("dup of the I/O memory descriptor");
        try
        {
            return new IoMem(dup, fileOffset, size);
        }
        catch
        {
            Libc.Close(dup);
            throw;
        }
    }

    /// <summary>A region backed by a fresh memfd of its own of <paramref name="size"/> bytes.</summary>
    /// <exception cref="ArgumentException">Size zero or unaligned.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is above <see cref="MaxSize"/>.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.NoMemory"/> as for <see cref="FromFile"/>; <see cref="UVmError.HostRefused"/>
    /// or <see cref="UVmError.HostNoMemory"/> when the host refuses the memfd.</exception>
    public static IoMem CreateAnonymous(ulong size)
    {
        if (size == 0 || !Paging.IsAligned(size)) ThrowHelper.Argument("the size must be a positive multiple of the page size", nameof(size));
        if (size > MaxSize) ThrowHelper.OutOfRange($"a region is at most 0x{MaxSize:x} bytes", nameof(size));
        int fd = Libc.MemfdCreate("uvm-iomem", Libc.MFD_CLOEXEC);
        if (fd < 0) HostCall.Fail("memfd_create");
        try
        {
            HostCall.Check(Libc.Ftruncate(fd, (long)size), "ftruncate of I/O memory");
            return new IoMem(fd, 0, size);
        }
        catch
        {
            Libc.Close(fd);
            throw;
        }
    }

    /// <summary>Whether <paramref name="paddr"/> falls in the region.</summary>
    public bool Contains(ulong paddr) => paddr >= Paddr && paddr - Paddr < Size;

    /// <summary>Drops the creator's hold. The descriptor closes when no space holds the region either.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _creatorDisposed, 1) == 0) Release();
    }

    internal void AddRef()
    {
        if (Interlocked.Increment(ref _refs) <= 1) throw new ObjectDisposedException(nameof(IoMem));
    }

    internal void Release()
    {
        if (Interlocked.Decrement(ref _refs) == 0) Libc.Close(Fd);
    }

    internal bool IsOpen => Volatile.Read(ref _refs) > 0;

    /// <inheritdoc/>
    public override string ToString() => $"IoMem(paddr 0x{Paddr:x}, {Size} bytes)";
}
