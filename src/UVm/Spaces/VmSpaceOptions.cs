using UVm.Frames;

namespace UVm.Spaces;

/// <summary>How a <see cref="VmSpace"/> is created.</summary>
public sealed record VmSpaceOptions
{
    /// <summary>Bytes of guest user space, <c>[0, Size)</c>: a positive multiple of 2 MiB, at most 128 TiB. Default 64 GiB.</summary>
    public ulong Size { get; init; } = 64UL << 30;

    /// <summary>
    /// Bytes of never-mapped host address range after the arena, so a host access that runs past
    /// the arena's end faults instead of reaching a neighbour mapping. Page aligned, at most
    /// <see cref="MaxHostGuardSize"/>; default 2 MiB. Host-side only: it is not guest address
    /// space; guard pages inside the guest are guard areas (<c>AreaBackend.Guard</c>).
    /// </summary>
    public ulong HostGuardSize { get; init; } = Paging.HugePageSize;

    /// <summary>The largest <see cref="HostGuardSize"/>: 1 TiB (so the arena and its guard never wrap the address space).</summary>
    public const ulong MaxHostGuardSize = 1UL << 40;

    /// <summary>
    /// The most host mappings (VMAs) the space's arena may use; operations that could pass it
    /// fail with <see cref="UVmError.HostMappingLimit"/> before changing anything. Null means
    /// three quarters of the kernel's <c>vm.max_map_count</c>. Whatever this says, the arenas of
    /// all live spaces together stay within that same three quarters (the kernel's limit is per
    /// process), with the same error.
    /// </summary>
    public int? MaxHostMappings { get; init; }

    /// <summary>
    /// Whether the pages a snapshot shares with the space are copied by the host (default true):
    /// mapped <c>MAP_PRIVATE</c> with their rights, so the first write to one is the kernel's
    /// copy-on-write, with no fault of UVm's, and <c>AddressSpace.Reset</c> drops the copies.
    /// Used where the host supports it (Linux 6.13 or later) and while no write watch was started
    /// on the space; false makes every copy UVm's own (a page fault, a frame of the pool).
    /// </summary>
    public bool HostCopies { get; init; } = true;

    /// <summary>The pool frames come from; null means <see cref="FramePool.Default"/>.</summary>
    public FramePool? Pool { get; init; }
}
