using NUnit.Framework;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Faults;

/// <summary>
/// A fixture with a private frame pool and, for each test, a fresh 1 GiB space activated on the
/// test's thread, with helpers to map pages of known contents. After each test the space is
/// disposed and the pool must hold no frame: every test is also a leak check.
/// </summary>
public abstract class GuestFixture
{
    /// <summary>Bytes in a page.</summary>
    protected const ulong Page = Paging.PageSize;

    /// <summary>Where tests put their first page (4 MiB: away from 0, inside the first 1 GiB).</summary>
    protected const ulong Va = 0x40_0000;

    private readonly List<UFrame> _frames = new();

    /// <summary>The fixture's own pool.</summary>
    protected FramePool Pool { get; private set; } = null!;

    /// <summary>The test's space, activated on the thread that runs the test.</summary>
    protected VmSpace Space { get; private set; } = null!;

    [OneTimeSetUp]
    public void CreatePool() => Pool = new FramePool(64UL << 20);

    [OneTimeTearDown]
    public void DisposePool() => Pool.Dispose();

    [SetUp]
    public void CreateSpace()
    {
        Space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = Pool });
        Space.Activate();
    }

    [TearDown]
    public void DisposeSpace()
    {
        Space.Dispose();
        foreach (UFrame frame in _frames) frame.Dispose();
        _frames.Clear();
        Assert.That(Pool.FramesInUse, Is.Zero, "frames leaked by the test");
    }

    /// <summary>The byte the tests expect at guest address <paramref name="va"/> of a patterned page: never 0.</summary>
    protected static byte PatternAt(ulong va) => (byte)(1 + (((va >> 12) * 37 + (va & 0xFFF) * 13) % 251));

    /// <summary>The pattern of <c>[va, va + length)</c>.</summary>
    protected static byte[] PatternOf(ulong va, int length)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++) bytes[i] = PatternAt(va + (ulong)i);
        return bytes;
    }

    /// <summary>Maps a new frame at <paramref name="va"/> holding <see cref="PatternAt"/>; the fixture disposes its handle.</summary>
    protected UFrame MapPatterned(ulong va, PageFlags flags = PageFlags.RW) => MapFrame(Space, va, flags, PatternOf(va, (int)Page));

    /// <summary>Maps a new frame at <paramref name="va"/> filled with <paramref name="fill"/>; the fixture disposes its handle.</summary>
    protected UFrame MapFilled(ulong va, byte fill, PageFlags flags = PageFlags.RW)
    {
        var bytes = new byte[Page];
        Array.Fill(bytes, fill);
        return MapFrame(Space, va, flags, bytes);
    }

    /// <summary>Maps <paramref name="count"/> consecutive patterned pages from <paramref name="va"/>.</summary>
    protected void MapPatternedPages(ulong va, int count, PageFlags flags = PageFlags.RW)
    {
        for (int i = 0; i < count; i++) MapPatterned(va + (ulong)i * Page, flags);
    }

    /// <summary>Maps a new frame with <paramref name="contents"/> at <paramref name="va"/> of <paramref name="space"/>.</summary>
    protected UFrame MapFrame(VmSpace space, ulong va, PageFlags flags, ReadOnlySpan<byte> contents)
    {
        UFrame frame = GuestMemory.NewFrame(Pool, contents);
        _frames.Add(frame);
        GuestMemory.MapAt(space, va, frame, PageProperty.New(flags));
        return frame;
    }

    /// <summary>The frame's contents, read through the linear map.</summary>
    protected static byte[] ContentsOf(UFrame frame)
    {
        var bytes = new byte[Page];
        var reader = frame.Reader();
        reader.Read(bytes);
        return bytes;
    }

    /// <summary>A buffer filled with <paramref name="fill"/>, to see which bytes a copy touched.</summary>
    protected static byte[] Filled(int length, byte fill)
    {
        var bytes = new byte[length];
        Array.Fill(bytes, fill);
        return bytes;
    }

    /// <summary>
    /// A page-fault handler that maps a fresh read-write frame holding <see cref="PatternAt"/> at
    /// the faulting page, and records every call.
    /// </summary>
    protected sealed class DemandPager
    {
        private int _calls;

        /// <summary>Handler calls so far.</summary>
        public int Calls => Volatile.Read(ref _calls);

        /// <summary>The faults the handler was given, in order.</summary>
        public List<PageFaultInfo> Seen { get; } = new();

        /// <summary>The handler: maps the patterned page and says "resolved".</summary>
        public bool Handle(VmSpace space, in PageFaultInfo info)
        {
            Interlocked.Increment(ref _calls);
            lock (Seen) Seen.Add(info);
            ulong page = info.Address & ~(Page - 1);
            using UFrame frame = space.Pool.AllocFrame();
            var writer = frame.Writer();
            writer.Write(PatternOf(page, (int)Page));
            using var cursor = space.CursorMut(VaddrRange.FromLength(page, Page));
            cursor.Map(frame, PageProperty.New(PageFlags.RW));
            return true;
        }
    }
}
