using UVm.Frames;
using UVm.Spaces;

namespace UVm.Areas;

public abstract partial record AreaBackend
{
    /// <summary>
    /// Shared memory at a fixed offset into a segment of frames: page <c>i</c> of the area maps
    /// frame <c>Offset / PageSize + i</c>. Mapped at once; never faults for data. Writes are
    /// shared, also across a fork. The caller keeps owning the segment handle.
    /// </summary>
    /// <param name="Segment">The frames.</param>
    /// <param name="Offset">Byte offset into the segment (page aligned).</param>
    public sealed record LinearFrames(USegment Segment, ulong Offset) : AreaBackend
    {
        internal override void Validate(VmSpace space, ulong length)
        {
            if (!Paging.IsAligned(Offset)) ThrowHelper.Argument("the linear offset must be page aligned", ParamName);
            if (!ReferenceEquals(Segment.Pool, space.Pool)) ThrowHelper.Argument("the segment belongs to another pool", ParamName);
            if (Offset > Segment.Size || Segment.Size - Offset < length)
                ThrowHelper.UVm(UVmError.InvalidArgs, "the segment is smaller than the mapping");
        }

        internal override void MapAtOnce(AddressSpace owner, VmArea area)
        {
            using CursorMut c = owner.Space.CursorMut(area.Range);
            ulong first = Offset / Paging.PageSize;
            for (ulong i = 0; i < area.Range.Length / Paging.PageSize; i++)
            {
                using UFrame frame = Segment.FrameAt(first + i);
                c.Map(frame, owner.PropFor(area, area.Range.Start + i * Paging.PageSize));
            }
        }

        internal override AreaBackend Shifted(ulong shift) => this with { Offset = Offset + shift };

        /// <summary>Maps the page again: it goes missing only if someone unmapped it through the space directly.</summary>
        internal override bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page) => RemapPage(owner, area, page);

        internal override string Describe() => $"linear frames (segment {Segment.Paddr:x12}, offset 0x{Offset:x})";
    }
}
