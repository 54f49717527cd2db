using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;

namespace UVm.Tests.Core;

/// <summary>
/// A private 64 MiB frame pool and a 1 GiB space per test, so frame counts are exact. After each
/// test the space is disposed and the pool must report zero frames in use: every test is also
/// a leak check.
/// </summary>
public abstract class SpaceFixture
{
    protected const ulong Page = Paging.PageSize;
    protected const ulong Huge = Paging.HugePageSize;
    protected const ulong GiB = 1UL << 30;
    protected const ulong MiB = 1UL << 20;

    protected static readonly PageProperty RW = PageProperty.New(PageFlags.RW);
    protected static readonly PageProperty R = PageProperty.New(PageFlags.R);

    private readonly List<IDisposable> _extra = new();

    protected FramePool Pool { get; private set; } = null!;
    protected VmSpace Space { get; private set; } = null!;

    /// <summary>Size of <see cref="Space"/>.</summary>
    protected virtual ulong SpaceSize => GiB;

    [SetUp]
    public void CreatePoolAndSpace()
    {
        Pool = new FramePool(64 * MiB);
        Space = NewSpace(SpaceSize);
    }

    [TearDown]
    public void DisposeAndCheckForLeaks()
    {
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "the test left a cursor alive");
        for (int i = _extra.Count - 1; i >= 0; i--) _extra[i].Dispose();
        _extra.Clear();
        Space.Dispose();
        long inUse = Pool.FramesInUse;
        if (inUse == 0) Pool.Dispose(); // a leaking pool cannot be disposed; it is left to the process exit
        Assert.That(inUse, Is.Zero, "frames of the test's pool are still in use after every space was disposed");
    }

    /// <summary>Another space on <see cref="Pool"/>, disposed after the test (before the pool is checked).</summary>
    protected VmSpace NewSpace(ulong size)
    {
        var space = new VmSpace(new VmSpaceOptions { Size = size, Pool = Pool });
        if (Space != null) _extra.Add(space);
        return space;
    }

    /// <summary>Something the test creates that must be disposed after it (before the pool is checked).</summary>
    protected T Later<T>(T disposable) where T : IDisposable
    {
        _extra.Add(disposable);
        return disposable;
    }

    protected static VaddrRange Span(ulong va, ulong len) => VaddrRange.FromLength(va, len);

    /// <summary>Maps <paramref name="frame"/> at <paramref name="va"/> through a cursor of its own (dispatched on return).</summary>
    protected void MapAt(ulong va, UFrame frame, PageProperty? prop = null) => MapAt(Space, va, frame, prop);

    protected static void MapAt(VmSpace space, ulong va, UFrame frame, PageProperty? prop = null) => GuestMemory.MapAt(space, va, frame, prop ?? RW);

    /// <summary>Maps <paramref name="segment"/> from <paramref name="va"/> through a cursor of its own.</summary>
    protected void MapAt(ulong va, USegment segment, PageProperty? prop = null)
    {
        using CursorMut c = Space.CursorMut(Span(va, segment.Size));
        c.Map(segment, prop ?? RW);
    }

    /// <summary>Unmaps <c>[va, va + len)</c> through a cursor of its own; returns the frames unmapped.</summary>
    protected ulong UnmapAt(ulong va, ulong len) => GuestMemory.Unmap(Space, va, len);

    /// <summary>A frame whose first 8 bytes hold <paramref name="tag"/>.</summary>
    protected UFrame TaggedFrame(ulong tag)
    {
        UFrame f = Pool.AllocFrame();
        VmWriter<Infallible> w = f.Writer();
        w.WriteVal(tag);
        return f;
    }

    protected static ulong TagOf(UFrame frame)
    {
        VmReader<Infallible> r = frame.Reader();
        return r.ReadVal<ulong>();
    }

    /// <summary>What a query at <paramref name="va"/> reports, in plain words (items disposed).</summary>
    protected string QueryAt(ulong va) => QueryAt(Space, va);

    protected static string QueryAt(VmSpace space, ulong va)
    {
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "a cursor is alive on this thread; a second one could deadlock");
        using Cursor c = space.Cursor(Span(va, Page));
        return Describe(c.Query());
    }

    /// <summary>Every slot of <paramref name="range"/>, in plain words: the state a failed call must leave unchanged.</summary>
    protected List<string> Snapshot(VaddrRange range)
    {
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "a cursor is alive on this thread; a second one could deadlock");
        using Cursor c = Space.Cursor(range);
        return GuestMemory.Describe(c);
    }

    /// <summary>Describes a query result and disposes its item.</summary>
    protected static string Describe((VaddrRange Range, VmQueriedItem? Item) q) => GuestMemory.Describe(q);

    protected static string Ram(ulong va, UFrame frame, PageProperty prop) =>
        $"{Span(va, Page)} ram 0x{frame.Paddr:x} {prop}";

    protected static string Hole(ulong start, ulong end) => $"{new VaddrRange(start, end)} hole";
}
