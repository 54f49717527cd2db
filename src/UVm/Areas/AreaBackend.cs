using UVm.Frames;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>Where an area's pages come from.</summary>
public abstract record AreaBackend
{
    private protected AreaBackend() { }

    /// <summary>
    /// Private memory from the frame pool. With <paramref name="Populate"/> every page gets a
    /// zeroed frame when the area is mapped; otherwise pages are allocated on first access
    /// (demand-zero, with fault-around). After a fork the frames are shared copy-on-write.
    /// </summary>
    /// <param name="Populate">Allocate all frames at map time.</param>
    public sealed record Alloc(bool Populate) : AreaBackend;

    /// <summary>
    /// Shared memory at a fixed offset into a segment of frames: page <c>i</c> of the area maps
    /// frame <c>Offset / PageSize + i</c>. Mapped at once; never faults for data. Writes are
    /// shared, also across a fork. The caller keeps owning the segment handle.
    /// </summary>
    /// <param name="Segment">The frames.</param>
    /// <param name="Offset">Byte offset into the segment (page aligned).</param>
    public sealed record LinearFrames(USegment Segment, ulong Offset) : AreaBackend;

    /// <summary>Shared I/O memory at a fixed offset into <paramref name="IoMem"/>, mapped at once.</summary>
    /// <param name="IoMem">The region.</param>
    /// <param name="Offset">Byte offset into the region (page aligned).</param>
    public sealed record LinearIoMem(IoMem IoMem, ulong Offset) : AreaBackend;
}
