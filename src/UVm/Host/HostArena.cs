namespace UVm.Host;

/// <summary>
/// The host address range that stands in for a guest's user space: <c>Size</c> bytes reserved
/// <c>PROT_NONE</c> (private, anonymous, no swap reservation) followed by a guard region that
/// is never mapped. Guest address <c>va</c> lives at host address <c>Base + va</c>.
/// </summary>
internal sealed class HostArena : IDisposable
{
    private int _disposed;

    internal HostArena(ulong size, ulong guard)
    {
        // Checked by VmSpace; an arena that wrapped would reserve less than the guest can address.
        if (size == 0 || size > Paging.MaxUserSpace || guard > Paging.MaxUserSpace)
            throw new ArgumentOutOfRangeException(nameof(size), "an arena and its guard are each at most 128 TiB");
        Size = size;
        Guard = guard;
        nint addr = Libc.Mmap(0, (nuint)(size + guard), Libc.PROT_NONE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (addr == Libc.MAP_FAILED)
            throw new UVmException(UVmError.HostNoMemory, $"the host refused to reserve an arena of {size + guard} bytes");
        Base = addr;
    }

    internal nint Base { get; }
    internal ulong Size { get; }
    internal ulong Guard { get; }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            HostCall.Check(Libc.Munmap(Base, (nuint)(Size + Guard)), "munmap of the arena");
    }
}
