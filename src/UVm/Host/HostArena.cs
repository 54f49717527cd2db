using UVm.Interop;
namespace UVm.Host;

/// <summary>
/// The host address range that stands in for a guest's user space: <c>Size</c> bytes reserved
/// <c>PROT_NONE</c> (private, anonymous, no swap reservation) followed by a host guard region that
/// is never mapped. Guest address <c>va</c> lives at host address <c>Base + va</c>.
/// </summary>
internal sealed class HostArena : IDisposable
{
    private int _disposed;

    internal HostArena(ulong size, ulong hostGuard)
    {
        // Checked by VmSpace; an arena that wrapped would reserve less than the guest can address.
        if (size == 0 || size > Paging.MaxUserSpace || hostGuard > Paging.MaxUserSpace)
            throw new ArgumentOutOfRangeException(nameof(size), "an arena and its guard are each at most 128 TiB");
        Size = size;
        HostGuard = hostGuard;
        nint addr = Libc.Mmap(0, (nuint)(size + hostGuard), Libc.PROT_NONE,
            Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
        if (addr == Libc.MAP_FAILED)
            throw new UVmException(UVmError.HostNoMemory, $"the host refused to reserve an arena of {size + hostGuard} bytes");
        Base = addr;
    }

    internal nint Base { get; }
    internal ulong Size { get; }
    /// <summary>Bytes of never-mapped host range after the arena (not a guest guard area: those are <c>AreaBackend.Guard</c>).</summary>
    internal ulong HostGuard { get; }

    /// <summary>
    /// Gives the range back to the host. Returns whether nothing of the guest's is mapped there
    /// any more: true when unmapped, or when the host refused the unmap but took every mapping of
    /// it back to the reserved state (the range then stays reserved, never reused, a leak of
    /// address space only); false when even that was refused (frames may still be mapped there).
    /// </summary>
    internal bool Release()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return true;
        if (Libc.Munmap(Base, (nuint)(Size + HostGuard)) == 0) return true;
        return Libc.Mmap(Base, (nuint)Size, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0) != Libc.MAP_FAILED;
    }

    public void Dispose() => Release();
}
