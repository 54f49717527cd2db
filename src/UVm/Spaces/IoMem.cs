using UVm.Host;

namespace UVm.Spaces;

/// <summary>
/// Untracked memory: a region of a file descriptor other than the frame pool (a second memfd,
/// a regular file), mapped into spaces without per-page reference counting.
/// </summary>
/// <remarks>
/// <para>Each region gets a range of physical addresses of its own, above any frame pool
/// (from 64 TiB up, 2 MiB aligned), so page-table entries can name it. The region keeps a
/// duplicate of the descriptor; it is closed when the creator has disposed the region and
/// every space that mapped it has been disposed: as with the seed's I/O memory, a space keeps
/// a mapped region until the space itself goes, even after unmapping every page of it.</para>
/// </remarks>
public sealed class IoMem : IDisposable
{
    private const ulong PaddrBase = 1UL << 46;
    private static ulong s_nextPaddr = PaddrBase;
    private int _refs = 1;
    private int _creatorDisposed;

    private IoMem(int fd, ulong fileOffset, ulong size)
    {
        Fd = fd;
        FileOffset = fileOffset;
        Size = size;
        ulong span = (size + Paging.HugePageSize - 1) & ~(Paging.HugePageSize - 1);
        Paddr = Interlocked.Add(ref s_nextPaddr, span + Paging.HugePageSize) - span - Paging.HugePageSize;
        Identity = HostCall.Identity(fd);
    }

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
    /// <exception cref="InvalidOperationException">The descriptor is not open.</exception>
    public static IoMem FromFile(int fd, ulong fileOffset, ulong size)
    {
        if (!Paging.IsAligned(fileOffset)) ThrowHelper.Argument("the offset must be page aligned", nameof(fileOffset));
        if (size == 0 || !Paging.IsAligned(size)) ThrowHelper.Argument("the size must be a positive multiple of the page size", nameof(size));
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
    public static IoMem CreateAnonymous(ulong size)
    {
        if (size == 0 || !Paging.IsAligned(size)) ThrowHelper.Argument("the size must be a positive multiple of the page size", nameof(size));
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
