using UVm.Frames;
using UVm.Spaces;

namespace UVm.Areas;

/// <summary>
/// An address space frozen at one moment (<see cref="AddressSpace.Snapshot"/>): its areas, its
/// mappings with their rights, and the contents of its pages, as frames of the pool shared
/// read-only with nothing copied. It has no arena of its own and does not depend on the space
/// it came from, which may change or be disposed. Spaces are made from it
/// (<see cref="Instantiate"/>) and reset to it in place (<see cref="AddressSpace.Reset"/>),
/// copy-on-write.
/// </summary>
/// <remarks>
/// <para>Thread-safe: any number of threads may instantiate from it and reset spaces to it at
/// once. <see cref="Dispose"/> waits for those in progress, then gives its frame references back;
/// a frame stays alive while a space still maps it.</para>
/// <para>Private pages (allocations, images, on-demand fills) are captured by content. Pages of
/// shared backends (linear frames, I/O memory) are captured as mappings: their frames are
/// shared with every space that maps them, so a reset maps them again but does not bring back
/// bytes written to them since.</para>
/// </remarks>
public sealed class VmSnapshot : IDisposable
{
    private readonly VmArea[] _areas;
    private readonly VmSpaceOptions _shape;

    internal VmSnapshot(TableSnapshot table, VmArea[] areas, int faultAroundPages, VmSpaceOptions shape)
    {
        Table = table;
        _areas = areas;
        FaultAroundPages = faultAroundPages;
        _shape = shape;
    }

    /// <summary>
    /// A snapshot dropped without <see cref="Dispose"/>: its frame references and I/O regions go
    /// back when it is collected.
    /// </summary>
    ~VmSnapshot() => Table.Dispose();

    internal TableSnapshot Table { get; }

    /// <summary>The size of the address spaces it describes (and of those that can be reset to it).</summary>
    public ulong Size => Table.Size;

    /// <summary>The pool its frames belong to (spaces reset to it must use the same).</summary>
    public FramePool Pool => Table.Pool;

    /// <summary>The areas, in address order, as they were.</summary>
    public IReadOnlyList<VmArea> Areas => _areas;

    /// <summary>The fault-around window of the space it was taken from, which its instances start with.</summary>
    public int FaultAroundPages { get; }

    /// <summary>Managed bytes of its own page table (the frozen copy; instances and resets share none of it).</summary>
    public long PageTableBytes => Table.TableBytes;

    /// <summary>Whether it was disposed.</summary>
    public bool IsDisposed => Table.IsDisposed;

    /// <summary>
    /// A new address space equal to the snapshot: the same areas, mappings, rights and contents,
    /// every private page shared copy-on-write (nothing is copied now), with a new arena and the
    /// default page-fault handler. Its first <see cref="AddressSpace.Reset"/> to this snapshot
    /// costs only what it changed.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The snapshot was disposed.</exception>
    /// <exception cref="UVmException"><see cref="UVmError.HostNoMemory"/>, <see cref="UVmError.HostRefused"/> or
    /// <see cref="UVmError.HostMappingLimit"/>: the host refused the new space (nothing is left of it).</exception>
    public AddressSpace Instantiate()
    {
        Table.EnterUse();
        try
        {
            VmSpace space = VmSpace.FromSnapshot(Table, _shape);
            return AddressSpace.Adopt(space, _areas, FaultAroundPages);
        }
        finally
        {
            Table.ExitUse();
        }
    }

    /// <summary>
    /// Gives back the snapshot's frame references and I/O regions, after the instantiations and
    /// resets in progress end. Spaces made from it or reset to it keep working. A second call does nothing.
    /// </summary>
    public void Dispose()
    {
        GC.SuppressFinalize(this);
        Table.Dispose();
    }
}
