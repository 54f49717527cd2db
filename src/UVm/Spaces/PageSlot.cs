using UVm.PageTable;

namespace UVm.Spaces;

/// <summary>
/// One slot of a space's page table, as the layers above <c>Spaces/</c> see it: where it is,
/// whether something is mapped, what (a frame of the pool, or untracked I/O memory) and with
/// which rights. Nothing above <c>Spaces/</c> sees a raw entry.
/// </summary>
/// <param name="Va">Start of the slot.</param>
/// <param name="Size">Bytes it covers (a page, a 2 MiB entry, or a hole).</param>
/// <param name="IsMapped">Whether a leaf maps it.</param>
/// <param name="IsTracked">Whether it maps a reference-counted frame of the pool (false for I/O memory and holes).</param>
/// <param name="Paddr">The physical address mapped at <see cref="Va"/> (0 for a hole).</param>
/// <param name="Prop">Rights, cache policy and privileged bits (default for a hole).</param>
/// <param name="IsHostCopy">Whether the frame is shared with a snapshot and the host copies the page on its first write (a host copy).</param>
internal readonly record struct PageSlot(ulong Va, ulong Size, bool IsMapped, bool IsTracked, ulong Paddr, PageProperty Prop, bool IsHostCopy = false)
{
    /// <summary>The slot's access rights (R, W, X).</summary>
    internal PageFlags Rights => Prop.Flags & PageFlags.RWX;

    /// <summary>Whether the slot is mapped and grants at least one of <paramref name="rights"/>.</summary>
    internal bool Allows(PageFlags rights) => IsMapped && (Prop.Flags & rights) != 0;

    /// <summary>End of the slot.</summary>
    internal ulong End => Va + Size;

    internal static PageSlot Of(in PtSlot slot) => slot.IsMapped
        ? new PageSlot(slot.Va, slot.Size, true, !Pte.IsUntracked(slot.Entry), Pte.Paddr(slot.Entry), Pte.ToProp(slot.Entry), Pte.IsHostCopy(slot.Entry))
        : new PageSlot(slot.Va, slot.Size, false, false, 0, default);
}
