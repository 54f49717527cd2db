// Everything MiniRuntime asks of UVm, in one file: the guest's address space (a read-only
// program image, a lazy heap, guard pages, a stack), its loads and stores, the snapshot every
// run starts from, and the fault report. No other file of the example calls UVm.
using UVm;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace MiniRuntime;

/// <summary>A guest load or store that faulted: it ends the run, and its message is the fault report.</summary>
public sealed class GuestFault(PageFaultInfo fault) : Exception($"{fault.Kind} fault: {fault.Access} at 0x{fault.Address:x}")
{
    /// <summary>The fault as UVm reported it: kind, access and exact guest address.</summary>
    public PageFaultInfo Fault { get; } = fault;
}

/// <summary>The guest's memory: image, heap, guards and stack in a 64 MiB address space, reset to a snapshot between runs.</summary>
public sealed class Sandbox : IDisposable
{
    /// <summary>Guest layout (bytes): the 1 MiB read-only image, the 16 MiB lazy heap with a guard page after it, a guard page below the 64 KiB stack.</summary>
    public const ulong SpaceSize = 64 << 20, ImageBase = 0x10_0000, ImageSize = 1 << 20, HeapBase = 0x100_0000, HeapSize = 16 << 20,
        HeapGuard = HeapBase + HeapSize, StackGuard = 0x2ff_f000, StackBase = StackGuard + Paging.PageSize, StackTop = StackBase + (64 << 10);

    private readonly FramePool _pool = new(64 << 20);
    private readonly AddressSpace _space;
    private readonly VmSnapshot _snapshot;

    /// <summary>Maps <paramref name="image"/> (<see cref="ImageSize"/> bytes) read-only, the heap with <paramref name="heapHeader"/> at its start, the guards and the stack; then takes the snapshot.</summary>
    public Sandbox(byte[] image, ReadOnlySpan<byte> heapHeader)
    {
        _space = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = _pool });
        using (VmImage program = VmImage.FromBytes(image, _pool))
            _space.Map(ImageSize, new AreaBackend.Image(program, 0), new VmMapOptions { Addr = ImageBase, Flags = PageFlags.R });
        _space.Map(HeapSize, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Addr = HeapBase, Flags = PageFlags.RW });
        _space.Map(Paging.PageSize, new AreaBackend.Guard(), new VmMapOptions { Addr = HeapGuard });
        _space.Map(Paging.PageSize, new AreaBackend.Guard(), new VmMapOptions { Addr = StackGuard });
        _space.Map(StackTop - StackBase, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Addr = StackBase, Flags = PageFlags.RW });
        Check(_space.Space.Write(HeapBase, heapHeader));
        _snapshot = _space.Snapshot();
    }

    /// <summary>The guest's <typeparamref name="T"/> at <paramref name="va"/>, whatever the address.</summary>
    /// <exception cref="GuestFault">The load faulted (outside the space too: <see cref="PageFaultKind.OutOfRange"/>).</exception>
    public T Load<T>(ulong va) where T : unmanaged => Ok(_space.Space.ReadVal<T>(va));

    /// <summary>Stores <paramref name="value"/> at the guest's <paramref name="va"/>, whatever the address.</summary>
    /// <exception cref="GuestFault">The store faulted; nothing was written.</exception>
    public void Store<T>(ulong va, T value) where T : unmanaged => Ok(_space.Space.WriteVal(va, value));

    /// <summary>The first <paramref name="length"/> bytes of the heap, as the guest sees them.</summary>
    public byte[] ReadHeap(int length)
    {
        var bytes = new byte[length];
        Check(_space.Space.Read(HeapBase, bytes));
        return bytes;
    }

    /// <summary>Puts the guest back as the snapshot has it; returns the pages compared (those the run may have changed).</summary>
    public int Reset() => _space.Reset(_snapshot);

    /// <summary>Accesses that hit a guard page so far.</summary>
    public long GuardFaults => _space.Stats.GuardFaults;

    /// <summary>Frames of the sandbox's pool in use (0 once the sandbox is disposed, if nothing leaked).</summary>
    public long FramesInUse => _pool.FramesInUse;

    /// <summary>Disposes the address space and the snapshot, then the pool if they gave every frame back (else <see cref="FramesInUse"/> says how many they kept).</summary>
    public void Dispose()
    {
        _space.Dispose();
        _snapshot.Dispose();
        if (_pool.FramesInUse == 0) _pool.Dispose();
    }

    private static T Ok<T>(IoResult<T> r) => r.IsOk ? r.Value : throw new GuestFault(r.Fault!.Value);

    private static void Check(CopyResult r)
    {
        if (!r.IsOk) throw new GuestFault(r.Fault!.Value);
    }
}
