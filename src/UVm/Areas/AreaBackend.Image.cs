using UVm.Spaces;

namespace UVm.Areas;

public abstract partial record AreaBackend
{
    /// <summary>
    /// The frames of <paramref name="Source"/> from byte <paramref name="Offset"/> on, page
    /// <c>i</c> of the area mapping frame <c>Offset / PageSize + i</c> of the image, all mapped
    /// when the area is mapped (one host mapping: the frames are contiguous). Nothing is copied:
    /// every space that maps the image shares its frames read-only. The pages are private: a
    /// write to a writable image area copies the page for the writing space (copy-on-write, as
    /// after a fork), and the image stays as it was. The image must outlive the call to
    /// <see cref="AddressSpace.Map"/> only; mapped pages keep their frames after it is disposed.
    /// </summary>
    /// <param name="Source">The contents (the property cannot share the record's name).</param>
    /// <param name="Offset">Byte offset into the image (page aligned).</param>
    public sealed record Image(VmImage Source, ulong Offset) : AreaBackend
    {
        /// <summary>The part of the image the area maps is checked against the image when the area is mapped.</summary>
        internal override void Validate(VmSpace space, ulong length)
        {
            if (Source is null) ThrowHelper.Argument("the image is null", ParamName);
            if (!Paging.IsAligned(Offset)) ThrowHelper.Argument("the image offset must be page aligned", ParamName);
            if (!ReferenceEquals(Source.Pool, space.Pool)) ThrowHelper.Argument("the image belongs to another pool than the space's", ParamName);
            if (Source.IsDisposed) ThrowHelper.Disposed(nameof(VmImage));
            if (Offset > Source.Size || Source.Size - Offset < length)
                ThrowHelper.UVm(UVmError.InvalidArgs, $"the image ({Source.Size} bytes) is smaller than the mapping of {length} bytes at offset 0x{Offset:x}");
        }

        internal override bool HasPrivatePages => true;

        internal override void MapAtOnce(AddressSpace owner, VmArea area)
        {
            // Read-only whatever the area allows: W comes with a write fault, which copies.
            PageProperty prop = PageProperty.New(area.Flags & ~PageFlags.W);
            ulong first = Source.BeginMap() + Offset;
            try
            {
                using CursorMut c = owner.Space.CursorMut(area.Range);
                for (ulong i = 0; i < area.Range.Length; i += Paging.PageSize)
                {
                    owner.Space.Pool.AddRef(first + i);
                    c.MapOwnedFrame(first + i, prop, populate: false); // takes the reference, or drops it if refused
                }
            }
            finally
            {
                Source.EndMap();
            }
        }

        internal override AreaBackend Shifted(ulong shift) => this with { Offset = Offset + shift };

        /// <summary>Maps the page's image frame again: it goes missing only if someone unmapped it through the space directly.</summary>
        internal override bool ResolveNotPresent(AddressSpace owner, VmArea area, ulong page)
        {
            try
            {
                return RemapPage(owner, area, page);
            }
            catch (ObjectDisposedException) when (Source.IsDisposed)
            {
                return false; // the image's frames may be gone: nothing to map again
            }
        }

        internal override string Describe() => $"image ({Source.Length} bytes, offset 0x{Offset:x})";
    }
}
