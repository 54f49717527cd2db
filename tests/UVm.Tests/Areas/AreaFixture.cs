using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Areas;

/// <summary>
/// A private 64 MiB frame pool per fixture and, per test, a 1 GiB <see cref="AddressSpace"/>
/// (<see cref="Parent"/>) on it. Every address space a test makes through <see cref="Track"/>
/// is disposed after the test, and then the pool must hold no frame and no chunk reservation:
/// every test is also a leak check. Before that, the host must mirror every live space's page table.
/// </summary>
/// <remarks>
/// Activation and the fault handler are per thread and process wide, so fixtures deriving from
/// this are <c>[NonParallelizable]</c>. Helpers that touch guest memory activate the space they
/// act on first.
/// </remarks>
public abstract class AreaFixture
{
    protected const ulong Page = Paging.PageSize;
    protected const ulong Huge = Paging.HugePageSize;
    protected const ulong MiB = 1UL << 20;
    protected const ulong GiB = 1UL << 30;

    /// <summary>Lazy, private memory.</summary>
    protected static readonly AreaBackend Lazy = new AreaBackend.Alloc(Populate: false);

    /// <summary>Private memory allocated when mapped.</summary>
    protected static readonly AreaBackend Populated = new AreaBackend.Alloc(Populate: true);

    private readonly List<IDisposable> _owned = new();

    protected FramePool Pool { get; private set; } = null!;

    /// <summary>The test's address space (1 GiB), activated on the test's thread.</summary>
    protected AddressSpace Parent { get; private set; } = null!;

    [OneTimeSetUp]
    public void CreatePool() => Pool = new FramePool(64 * MiB);

    [OneTimeTearDown]
    public void DisposePool()
    {
        if (Pool.FramesInUse == 0) Pool.Dispose(); // a leaking pool cannot be disposed; the failed test says why
    }

    [SetUp]
    public void CreateParent()
    {
        Parent = NewAddressSpace();
        Parent.Space.Activate();
    }

    [TearDown]
    public void DisposeAndCheckForLeaks()
    {
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "the test left a cursor alive");
        var live = _owned.OfType<AddressSpace>().Where(s => !s.Space.IsDisposed).ToArray();
        try
        {
            AssertHostMirrors(live); // the host check after the last step of every test
        }
        finally
        {
            DisposeOwned();
        }
        Assert.That(Pool.FramesInUse, Is.Zero, "frames of the pool are still in use after every space was disposed");
        Assert.That(Pool.ReservedChunks, Is.Zero, "chunks of the pool are still reserved after every space was disposed");
    }

    private void DisposeOwned()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
        VmSpace.Deactivate();
    }

    /// <summary>A new 1 GiB address space on the fixture's pool, disposed after the test.</summary>
    protected AddressSpace NewAddressSpace(ulong size = GiB) =>
        Track(new AddressSpace(new VmSpaceOptions { Size = size, Pool = Pool }));

    /// <summary>
    /// A new 1 GiB address space on the fixture's pool whose snapshot paths make no host copies
    /// (<see cref="VmSpaceOptions.HostCopies"/> false): every copy on write is UVm's, through a
    /// fault, as on a host without them. Disposed after the test.
    /// </summary>
    protected AddressSpace NewAddressSpaceWithoutHostCopies(ulong size = GiB) =>
        Track(new AddressSpace(new VmSpaceOptions { Size = size, Pool = Pool, HostCopies = false }));

    /// <summary>Disposes <paramref name="disposable"/> after the test (before the pool is checked).</summary>
    protected T Track<T>(T disposable) where T : IDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }

    /// <summary>Forks <paramref name="space"/>; the child is disposed after the test.</summary>
    protected AddressSpace ForkOf(AddressSpace space) => Track(space.Fork());

    protected static VaddrRange Span(ulong va, ulong len) => VaddrRange.FromLength(va, len);

    protected static VmMapOptions At(ulong addr, PageFlags flags = PageFlags.RW, bool overwrite = false) =>
        new() { Addr = addr, Flags = flags, CanOverwrite = overwrite };

    protected static VmMapOptions Anywhere(PageFlags flags = PageFlags.RW, ulong align = Page) =>
        new() { Flags = flags, Align = align };

    /// <summary>Maps a lazy RW area of <paramref name="pages"/> pages at a 2 MiB aligned free address.</summary>
    protected static ulong MapLazy(AddressSpace space, int pages, PageFlags flags = PageFlags.RW) =>
        space.Map((ulong)pages * Page, Lazy, Anywhere(flags, Huge));

    // ---- guest access -----------------------------------------------------------------

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="va"/> of <paramref name="space"/> through a fallible writer.</summary>
    protected static CopyResult TryWrite(AddressSpace space, ulong va, ReadOnlySpan<byte> bytes)
    {
        space.Space.Activate();
        VmWriter<Fallible> w = space.Space.Writer(va, (ulong)bytes.Length);
        return w.WriteFallible(bytes);
    }

    /// <summary>As <see cref="TryWrite"/>, and asserts the whole write succeeded.</summary>
    protected static void Write(AddressSpace space, ulong va, ReadOnlySpan<byte> bytes)
    {
        CopyResult r = TryWrite(space, va, bytes);
        Assert.That(r.IsOk, Is.True, $"write of {bytes.Length} bytes at 0x{va:x} failed: {r.Error} {r.Fault}");
        Assert.That(r.Bytes, Is.EqualTo((ulong)bytes.Length));
    }

    /// <summary>Writes <paramref name="value"/> at <paramref name="va"/>, asserting success.</summary>
    protected static void WriteU64(AddressSpace space, ulong va, ulong value) => Write(space, va, BitConverter.GetBytes(value));

    /// <summary>Reads <c>into.Length</c> bytes at <paramref name="va"/> of <paramref name="space"/> into <paramref name="into"/> through a fallible reader.</summary>
    protected static CopyResult TryRead(AddressSpace space, ulong va, byte[] into)
    {
        space.Space.Activate();
        VmReader<Fallible> r = space.Space.Reader(va, (ulong)into.Length);
        return r.ReadFallible(into);
    }

    /// <summary>Reads <paramref name="len"/> bytes at <paramref name="va"/>, asserting success.</summary>
    protected static byte[] Read(AddressSpace space, ulong va, int len)
    {
        var bytes = new byte[len];
        CopyResult r = TryRead(space, va, bytes);
        Assert.That(r.IsOk, Is.True, $"read of {len} bytes at 0x{va:x} failed: {r.Error} {r.Fault}");
        return bytes;
    }

    protected static ulong ReadU64(AddressSpace space, ulong va) => BitConverter.ToUInt64(Read(space, va, 8));

    /// <summary>A page filled with <paramref name="fill"/>.</summary>
    protected static byte[] Filled(byte fill, int len = (int)Page)
    {
        var bytes = new byte[len];
        Array.Fill(bytes, fill);
        return bytes;
    }

    // ---- what the page table says ------------------------------------------------------

    /// <summary>One mapped page as a query reports it (the query's handle already dropped from the count).</summary>
    protected readonly record struct PageInfo(ulong Paddr, int References, PageFlags Flags);

    /// <summary>The RAM pages mapped in <paramref name="range"/>, by address; I/O slots are left out. Items are disposed.</summary>
    protected static Dictionary<ulong, PageInfo> Pages(AddressSpace space, VaddrRange range)
    {
        var pages = new Dictionary<ulong, PageInfo>();
        foreach ((VaddrRange slot, VmQueriedItem? item) in space.QueryRange(range))
        {
            using (item)
            {
                if (item is MappedRam ram)
                    pages[slot.Start] = new PageInfo(ram.Frame.Paddr, ram.Frame.ReferenceCount - 1, ram.Prop.Flags & PageFlags.RWX);
            }
        }
        return pages;
    }

    /// <summary>The page at <paramref name="va"/>, or null when nothing (or I/O memory) is mapped there.</summary>
    protected static PageInfo? PageAt(AddressSpace space, ulong va) =>
        Pages(space, Span(va, Page)).TryGetValue(va, out PageInfo p) ? p : null;

    /// <summary>Every slot of <paramref name="range"/> in plain words: the state a failed call must leave unchanged.</summary>
    protected static List<string> Snapshot(AddressSpace space, VaddrRange range) => GuestMemory.Describe(space.QueryRange(range));

    /// <summary>Asserts that the host mirrors the page table of every given space.</summary>
    protected static void AssertHostMirrors(params AddressSpace[] spaces)
    {
        foreach (AddressSpace s in spaces) GuestMemory.AssertMirrors(s.Space);
    }

    /// <summary>Counters that must not move when an access needs no fault.</summary>
    protected static (long Spurious, long Handled, long Unresolved, long DemandZero, long Copies, long Takeovers) Faults(AddressSpace s) =>
        (s.Space.SpuriousFaults, s.Space.HandledFaults, s.Space.UnresolvedFaults, s.Stats.DemandZeroFaults, s.Stats.CopyOnWriteCopies, s.Stats.CopyOnWriteTakeovers);

    /// <summary>Asserts that <paramref name="r"/> stopped on an unresolved fault of <paramref name="kind"/> at <paramref name="va"/>.</summary>
    protected static void AssertFault(CopyResult r, ulong va, PageFaultKind kind, ulong bytesDone = 0)
    {
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.EqualTo(bytesDone));
        Assert.That(r.Fault, Is.Not.Null);
        Assert.That(r.Fault!.Value.Address, Is.EqualTo(va));
        Assert.That(r.Fault.Value.Kind, Is.EqualTo(kind));
    }
}
