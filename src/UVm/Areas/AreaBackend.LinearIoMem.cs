using UVm.Spaces;

namespace UVm.Areas;

public abstract partial record AreaBackend
{
    /// <summary>Shared I/O memory at a fixed offset into <paramref name="IoMem"/>, mapped at once.</summary>
    /// <param name="IoMem">The region.</param>
    /// <param name="Offset">Byte offset into the region (page aligned).</param>
    public sealed record LinearIoMem(IoMem IoMem, ulong Offset) : AreaBackend
    {
        internal override void Validate(VmSpace space, ulong length)
        {
            if (!Paging.IsAligned(Offset)) ThrowHelper.Argument("the linear offset must be page aligned", ParamName);
            if (Offset > IoMem.Size || IoMem.Size - Offset < length)
                ThrowHelper.UVm(UVmError.InvalidArgs, "the I/O memory is smaller than the mapping");
        }

        internal override void MapAtOnce(AddressSpace owner, VmArea area)
        {
            using CursorMut c = owner.Space.CursorMut(area.Range);
            c.MapIoMem(IoMem, PageProperty.New(area.Flags), area.Range.Length, Offset);
        }

        internal override AreaBackend Shifted(ulong shift) => this with { Offset = Offset + shift };

        /// <summary>Maps the page again: it goes missing only if someone unmapped it through the space directly.</summary>
        internal override bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page) => RemapPage(owner, area, page);

        internal override string Describe() => $"linear iomem (region {IoMem.Paddr:x12}, offset 0x{Offset:x})";
    }
}
