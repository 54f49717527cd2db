using UVm.Frames;

namespace UVm.Spaces;

/// <summary>What a query found mapped at a slot of a space.</summary>
public abstract record VmQueriedItem(PageProperty Prop) : IDisposable
{
    /// <summary>Releases what the item holds (the frame handle of <see cref="MappedRam"/>).</summary>
    public virtual void Dispose() { }
}

/// <summary>
/// A tracked frame of the space's pool is mapped. <see cref="Frame"/> is a new handle (one
/// reference) that the receiver owns: dispose the item, or the frame, when done. For a host
/// copy (<see cref="VmSpaceOptions.HostCopies"/>) it is the frame shared with the snapshot: once
/// the guest wrote the page, the page's contents are the host's copy in the arena (read them
/// through the space's readers), not the frame's.
/// </summary>
/// <param name="Frame">The mapped frame.</param>
/// <param name="Prop">The slot's properties.</param>
public sealed record MappedRam(UFrame Frame, PageProperty Prop) : VmQueriedItem(Prop)
{
    /// <inheritdoc/>
    public override void Dispose()
    {
        Frame.Dispose();
        base.Dispose();
    }
}

/// <summary>Untracked I/O memory is mapped at <paramref name="Paddr"/> (see <see cref="IoMem"/>).</summary>
/// <param name="Paddr">Physical address of the slot's start.</param>
/// <param name="Prop">The slot's properties.</param>
public sealed record MappedIoMem(ulong Paddr, PageProperty Prop) : VmQueriedItem(Prop);
