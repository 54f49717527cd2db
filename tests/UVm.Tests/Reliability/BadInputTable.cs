using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// Every public entry point × every bad input that applies to it. Each case must throw exactly the
/// documented exception (and <see cref="UVmError"/>) and leave the space exactly as it was: the
/// same slots (range, frame, rights) over its whole range, a host that mirrors its page table,
/// the same frames in use, and no cursor left alive.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class BadInputTable
{
    /// <summary>One row of the table.</summary>
    public sealed record BadCase(string EntryPoint, string Kind, Action<World> Act, Type Expected, UVmError? Error = null)
    {
        public override string ToString() => $"{EntryPoint} / {Kind}";
    }

    /// <summary>
    /// A populated space to misuse: an <see cref="AddressSpace"/> with a lazy RW area (two pages
    /// touched), a populated read-only area and a linear area, frames mapped directly outside the
    /// areas, I/O memory, and already disposed objects of every kind. The space is activated on
    /// the test's thread.
    /// </summary>
    public sealed class World : IDisposable
    {
        public const ulong SpaceSize = 64 * MiB;
        public const ulong LazyVa = 1 * MiB, ReadOnlyVa = 2 * MiB, LinearVa = 3 * MiB, DirectVa = 32 * MiB, IoVa = 40 * MiB;

        public World()
        {
            Pool = new FramePool(16 * MiB);
            OtherPool = new FramePool(2 * MiB);
            Areas = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = Pool });
            Space.Activate();
            Segment = Pool.AllocSegment(8);
            Areas.Map(16 * Page, new AreaBackend.Alloc(false), new VmMapOptions { Addr = LazyVa, Flags = PageFlags.RW });
            Areas.Map(4 * Page, new AreaBackend.Alloc(true), new VmMapOptions { Addr = ReadOnlyVa, Flags = PageFlags.R });
            Areas.Map(4 * Page, new AreaBackend.LinearFrames(Segment, 2 * Page), new VmMapOptions { Addr = LinearVa, Flags = PageFlags.RW });
            Assert.That(Write(Space, LazyVa, new byte[] { 1, 2, 3 }).IsOk);
            Assert.That(Write(Space, LazyVa + 5 * Page, new byte[] { 4 }).IsOk);
            for (int i = 0; i < 4; i++) MapFilled(Space, DirectVa + (ulong)i * Page, (byte)(0x10 + i), i == 3 ? PageFlags.R : PageFlags.RW);
            Io = IoMem.CreateAnonymous(4 * Page);
            using (CursorMut c = Space.CursorMut(VaddrRange.FromLength(IoVa, 2 * Page))) c.MapIoMem(Io, PageProperty.New(PageFlags.RW), 2 * Page, 0);

            DisposedSpace = new VmSpace(new VmSpaceOptions { Size = 4 * MiB, Pool = Pool });
            DisposedSpace.Dispose();
            DisposedAreas = new AddressSpace(new VmSpaceOptions { Size = 4 * MiB, Pool = Pool });
            DisposedAreas.Dispose();
            DisposedPool = new FramePool(2 * MiB);
            DisposedPool.Dispose();
        }

        public FramePool Pool { get; }
        public FramePool OtherPool { get; }
        public FramePool DisposedPool { get; }
        public AddressSpace Areas { get; }
        public AddressSpace DisposedAreas { get; }
        public VmSpace Space => Areas.Space;
        public VmSpace DisposedSpace { get; }
        public USegment Segment { get; }
        public IoMem Io { get; }

        /// <summary>A cursor over a 4-page range of the space, already disposed.</summary>
        public Cursor DisposedCursor()
        {
            Cursor c = Space.Cursor(VaddrRange.FromLength(DirectVa, 4 * Page));
            c.Dispose();
            return c;
        }

        /// <summary>A mutable cursor over a 4-page range of the space, already disposed.</summary>
        public CursorMut DisposedCursorMut()
        {
            CursorMut c = Space.CursorMut(VaddrRange.FromLength(DirectVa, 4 * Page));
            c.Dispose();
            return c;
        }

        public void Dispose()
        {
            VmSpace.Deactivate();
            Areas.Dispose();
            Segment.Dispose();
            Io.Dispose();
            Assert.That(Pool.FramesInUse, Is.Zero, "the case leaked frames");
            Assert.That(OtherPool.FramesInUse, Is.Zero, "the case leaked frames of the other pool");
            Pool.Dispose();
            OtherPool.Dispose();
        }
    }

    private static readonly Type Arg = typeof(ArgumentException);
    private static readonly Type ArgNull = typeof(ArgumentNullException);
    private static readonly Type OutOfRange = typeof(ArgumentOutOfRangeException);
    private static readonly Type Disposed = typeof(ObjectDisposedException);
    private static readonly Type Invalid = typeof(InvalidOperationException);
    private static readonly Type UVmEx = typeof(UVmException);

    private static readonly PageProperty RW = PageProperty.New(PageFlags.RW);

    private static VaddrRange Pages(ulong va, ulong n) => VaddrRange.FromLength(va, n * Page);

    private static void Nop(ref PageFlags f, ref CachePolicy c) { }

    /// <summary>The table.</summary>
    public static IEnumerable<BadCase> Rows()
    {
        const ulong S = World.SpaceSize;
        const ulong D = World.DirectVa;

        // ---- VmSpace construction ----------------------------------------------------------
        yield return new("new VmSpace", "zero size", w => new VmSpace(new VmSpaceOptions { Size = 0, Pool = w.Pool }), Arg);
        yield return new("new VmSpace", "size not a multiple of 2 MiB", w => new VmSpace(new VmSpaceOptions { Size = 3 * MiB, Pool = w.Pool }), Arg);
        yield return new("new VmSpace", "size above 128 TiB", w => new VmSpace(new VmSpaceOptions { Size = 256UL << 40, Pool = w.Pool }), Arg);
        yield return new("new VmSpace", "unaligned guard", w => new VmSpace(new VmSpaceOptions { Size = 4 * MiB, HostGuardSize = 100, Pool = w.Pool }), Arg);
        yield return new("new VmSpace", "host-mapping budget below 3", w => new VmSpace(new VmSpaceOptions { Size = 4 * MiB, MaxHostMappings = 2, Pool = w.Pool }), Arg);

        // ---- VmSpace.Cursor / CursorMut ----------------------------------------------------------
        foreach ((string name, Func<VmSpace, VaddrRange, IDisposable> open) in new (string, Func<VmSpace, VaddrRange, IDisposable>)[]
                 { ("VmSpace.Cursor", (s, r) => s.Cursor(r)), ("VmSpace.CursorMut", (s, r) => s.CursorMut(r)) })
        {
            yield return new(name, "unaligned start", w => open(w.Space, new VaddrRange(D + 1, D + Page)).Dispose(), Arg);
            yield return new(name, "unaligned end", w => open(w.Space, new VaddrRange(D, D + Page + 7)).Dispose(), Arg);
            yield return new(name, "empty range", w => open(w.Space, new VaddrRange(D, D)).Dispose(), UVmEx, UVmError.InvalidArgs);
            yield return new(name, "reversed range", w => open(w.Space, new VaddrRange(D + Page, D)).Dispose(), UVmEx, UVmError.InvalidArgs);
            yield return new(name, "range past the space", w => open(w.Space, new VaddrRange(S - Page, S + Page)).Dispose(), UVmEx, UVmError.InvalidArgs);
            yield return new(name, "range at the top of the address space", w => open(w.Space, new VaddrRange(ulong.MaxValue - 2 * Page + 1, ulong.MaxValue - Page + 1)).Dispose(), UVmEx, UVmError.InvalidArgs);
            yield return new(name, "disposed space", w => open(w.DisposedSpace, Pages(0, 1)).Dispose(), Disposed);
        }

        // ---- VmSpace: activation, fallible access, handlers, fork ----------------------------
        yield return new("VmSpace.Activate", "disposed space", w => w.DisposedSpace.Activate(), Disposed);
        foreach ((string name, Action<VmSpace, ulong, ulong> open) in new (string, Action<VmSpace, ulong, ulong>)[]
                 {
                     ("VmSpace.Reader", (s, va, len) => s.Reader(va, len)),
                     ("VmSpace.Writer", (s, va, len) => s.Writer(va, len)),
                     ("VmSpace.ReaderWriter", (s, va, len) => s.ReaderWriter(va, len, out _, out _)),
                 })
        {
            yield return new(name, "space not activated on this thread", w => { VmSpace.Deactivate(); open(w.Space, D, 8); }, UVmEx, UVmError.AccessDenied);
            yield return new(name, "another space activated on this thread", w =>
            {
                using var other = new VmSpace(new VmSpaceOptions { Size = 4 * MiB, Pool = w.Pool });
                other.Activate();
                open(w.Space, D, 8);
            }, UVmEx, UVmError.AccessDenied);
            yield return new(name, "activated on another thread only", w =>
            {
                VmSpace.Deactivate();
                OnOtherThread(() => w.Space.Activate());
                open(w.Space, D, 8);
            }, UVmEx, UVmError.AccessDenied);
            yield return new(name, "va + len overflows", w => open(w.Space, D, ulong.MaxValue - D + 2), UVmEx, UVmError.AccessDenied);
            yield return new(name, "va out of range", w => open(w.Space, S, 1), UVmEx, UVmError.AccessDenied);
            yield return new(name, "len passes the end", w => open(w.Space, S - 8, 16), UVmEx, UVmError.AccessDenied);
            yield return new(name, "disposed space", w => open(w.DisposedSpace, 0, 8), Disposed);
        }
        yield return new("VmSpace.RegisterPageFaultHandler", "null handler", w => w.Space.RegisterPageFaultHandler(null!), ArgNull);
        yield return new("VmSpace.RegisterPageFaultHandler", "disposed space", w => w.DisposedSpace.RegisterPageFaultHandler((_, in _) => true), Disposed);
        yield return new("VmSpace.HandlePageFault", "disposed space", w => w.DisposedSpace.HandlePageFault(0, PageFaultAccess.Read), Disposed);
        yield return new("VmSpace.ForkCopyOnWrite", "disposed space", w => w.DisposedSpace.ForkCopyOnWrite(), Disposed);

        // ---- Cursor ----------------------------------------------------------------------------
        yield return new("Cursor.Jump", "unaligned address", w => { using Cursor c = w.Space.Cursor(Pages(D, 4)); c.Jump(D + 8); }, Arg);
        yield return new("Cursor.Jump", "below the cursor's range", w => { using Cursor c = w.Space.Cursor(Pages(D, 4)); c.Jump(D - Page); }, UVmEx, UVmError.InvalidArgs);
        yield return new("Cursor.Jump", "at the cursor's end", w => { using Cursor c = w.Space.Cursor(Pages(D, 4)); c.Jump(D + 4 * Page); }, UVmEx, UVmError.InvalidArgs);
        yield return new("Cursor.Jump", "disposed cursor", w => w.DisposedCursor().Jump(D), Disposed);
        yield return new("Cursor.Query", "cursor past its end", w =>
        {
            using Cursor c = w.Space.Cursor(Pages(D, 4));
            foreach ((_, VmQueriedItem? item) in c) item?.Dispose();
            c.Query();
        }, UVmEx, UVmError.InvalidArgs);
        yield return new("Cursor.Query", "disposed cursor", w => w.DisposedCursor().Query(), Disposed);
        yield return new("Cursor.FindNext", "length past the cursor's range", w => { using Cursor c = w.Space.Cursor(Pages(D, 4)); c.FindNext(5 * Page); }, OutOfRange);
        yield return new("Cursor.FindNext", "length past the range after moving", w =>
        {
            using Cursor c = w.Space.Cursor(Pages(D, 4));
            c.Jump(D + 2 * Page);
            c.FindNext(3 * Page);
        }, OutOfRange);
        yield return new("Cursor.FindNext", "disposed cursor", w => w.DisposedCursor().FindNext(Page), Disposed);
        yield return new("Cursor.VirtAddr", "disposed cursor", w => _ = w.DisposedCursor().VirtAddr, Disposed);
        yield return new("Cursor.GetEnumerator", "disposed cursor", w => w.DisposedCursor().GetEnumerator().MoveNext(), Disposed);

        // ---- CursorMut -------------------------------------------------------------------------
        yield return new("CursorMut.Map(UFrame)", "null frame", w => { using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 1)); c.Map((UFrame)null!, RW); }, ArgNull);
        yield return new("CursorMut.Map(UFrame)", "frame handle already disposed", w =>
        {
            UFrame f = w.Pool.AllocFrame();
            f.Dispose();
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 1));
            c.Map(f, RW);
        }, Disposed);
        yield return new("CursorMut.Map(UFrame)", "frame of another pool", w =>
        {
            using UFrame f = w.OtherPool.AllocFrame();
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 1));
            c.Map(f, RW);
        }, Arg);
        yield return new("CursorMut.Map(UFrame)", "no page left in the cursor's range", w =>
        {
            using UFrame f = w.Pool.AllocFrame();
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 1));
            c.Jump(D + 8 * Page);
            c.Unmap(Page); // moves to the end
            c.Map(f, RW);
        }, OutOfRange);
        yield return new("CursorMut.Map(UFrame)", "disposed cursor", w =>
        {
            using UFrame f = w.Pool.AllocFrame();
            w.DisposedCursorMut().Map(f, RW);
        }, Disposed);
        yield return new("CursorMut.Map(USegment)", "null segment", w => { using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 1)); c.Map((USegment)null!, RW); }, ArgNull);
        yield return new("CursorMut.Map(USegment)", "segment handle already disposed", w =>
        {
            USegment s = w.Pool.AllocSegment(2);
            s.Dispose();
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2));
            c.Map(s, RW);
        }, Disposed);
        yield return new("CursorMut.Map(USegment)", "segment of another pool", w =>
        {
            using USegment s = w.OtherPool.AllocSegment(2);
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2));
            c.Map(s, RW);
        }, Arg);
        yield return new("CursorMut.Map(USegment)", "segment longer than the cursor's range", w =>
        {
            using USegment s = w.Pool.AllocSegment(3);
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2));
            c.Map(s, RW);
        }, OutOfRange);
        yield return new("CursorMut.Map(USegment)", "disposed cursor", w =>
        {
            using USegment s = w.Pool.AllocSegment(1);
            w.DisposedCursorMut().Map(s, RW);
        }, Disposed);
        yield return new("CursorMut.MapIoMem", "null region", w => { using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2)); c.MapIoMem(null!, RW, Page, 0); }, ArgNull);
        yield return new("CursorMut.MapIoMem", "unaligned length", w => { using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2)); c.MapIoMem(w.Io, RW, Page + 1, 0); }, Arg);
        yield return new("CursorMut.MapIoMem", "unaligned offset", w => { using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2)); c.MapIoMem(w.Io, RW, Page, 12); }, Arg);
        yield return new("CursorMut.MapIoMem", "length past the cursor's range", w => { using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2)); c.MapIoMem(w.Io, RW, 3 * Page, 0); }, OutOfRange);
        yield return new("CursorMut.MapIoMem", "region already closed", w =>
        {
            IoMem io = IoMem.CreateAnonymous(Page);
            io.Dispose();
            using CursorMut c = w.Space.CursorMut(Pages(D + 8 * Page, 2));
            c.MapIoMem(io, RW, Page, 0);
        }, Disposed);
        yield return new("CursorMut.MapIoMem", "disposed cursor", w => w.DisposedCursorMut().MapIoMem(w.Io, RW, Page, 0), Disposed);
        yield return new("CursorMut.Unmap", "unaligned length", w => { using CursorMut c = w.Space.CursorMut(Pages(D, 4)); c.Unmap(Page + 1); }, Arg);
        yield return new("CursorMut.Unmap", "length past the cursor's range", w => { using CursorMut c = w.Space.CursorMut(Pages(D, 4)); c.Unmap(5 * Page); }, OutOfRange);
        yield return new("CursorMut.Unmap", "overflowing length", w => { using CursorMut c = w.Space.CursorMut(Pages(D, 4)); c.Unmap(ulong.MaxValue & ~(Page - 1)); }, OutOfRange);
        yield return new("CursorMut.Unmap", "disposed cursor", w => w.DisposedCursorMut().Unmap(Page), Disposed);
        yield return new("CursorMut.ProtectNext", "null operation", w => { using CursorMut c = w.Space.CursorMut(Pages(D, 4)); c.ProtectNext(Page, null!); }, ArgNull);
        yield return new("CursorMut.ProtectNext", "unaligned length", w => { using CursorMut c = w.Space.CursorMut(Pages(D, 4)); c.ProtectNext(100, Nop); }, Arg);
        yield return new("CursorMut.ProtectNext", "length past the cursor's range", w => { using CursorMut c = w.Space.CursorMut(Pages(D, 4)); c.ProtectNext(8 * Page, Nop); }, OutOfRange);
        yield return new("CursorMut.ProtectNext", "disposed cursor", w => w.DisposedCursorMut().ProtectNext(Page, Nop), Disposed);
        yield return new("CursorMut.Flusher", "disposed cursor", w => _ = w.DisposedCursorMut().Flusher, Disposed);
        yield return new("CursorMut.FindIoMemByPaddr", "disposed cursor", w => w.DisposedCursorMut().FindIoMemByPaddr(w.Io.Paddr), Disposed);

        // ---- Frames ------------------------------------------------------------------------------
        yield return new("new FramePool", "zero capacity", _ => new FramePool(0), Arg);
        yield return new("new FramePool", "capacity not a multiple of 2 MiB", _ => new FramePool(3 * MiB), Arg);
        yield return new("new FramePool", "capacity above 16 TiB", _ => new FramePool(32UL << 40), Arg);
        yield return new("FramePool.AllocSegment", "empty segment", w => w.Pool.AllocSegment(0), OutOfRange);
        yield return new("FramePool.AllocFrame", "disposed pool", w => w.DisposedPool.AllocFrame(), Disposed);
        yield return new("FramePool.AllocSegment", "disposed pool", w => w.DisposedPool.AllocSegment(1), Disposed);
        yield return new("FramePool.Dispose", "frames still in use", w => w.Pool.Dispose(), Invalid);
        yield return new("FramePool.Dispose", "the default pool", _ => FramePool.Default.Dispose(), Invalid);
        foreach ((string name, Action<UFrame> use) in new (string, Action<UFrame>)[]
                 { ("UFrame.Clone", f => f.Clone()), ("UFrame.Reader", f => f.Reader()), ("UFrame.Writer", f => f.Writer()) })
        {
            yield return new(name, "frame handle already disposed", w =>
            {
                UFrame f = w.Pool.AllocFrame();
                f.Dispose();
                use(f);
            }, Disposed);
        }
        yield return new("USegment.FrameAt", "index past the segment", w => w.Segment.FrameAt(8), OutOfRange);
        foreach ((string name, Action<USegment> use) in new (string, Action<USegment>)[]
                 { ("USegment.FrameAt", s => s.FrameAt(0)), ("USegment.Reader", s => s.Reader()), ("USegment.Writer", s => s.Writer()) })
        {
            yield return new(name, "segment handle already disposed", w =>
            {
                USegment s = w.Pool.AllocSegment(2);
                s.Dispose();
                use(s);
            }, Disposed);
        }
        yield return new("VmQueriedItem", "frame of a disposed item", w =>
        {
            using Cursor c = w.Space.Cursor(Pages(D, 1));
            VmQueriedItem? item = c.Query().Item;
            item!.Dispose();
            ((MappedRam)item).Frame.Clone();
        }, Disposed);

        // ---- I/O memory and ranges -------------------------------------------------------------
        yield return new("IoMem.FromFile", "unaligned offset", _ => IoMem.FromFile(0, 1, Page), Arg);
        yield return new("IoMem.FromFile", "zero size", _ => IoMem.FromFile(0, 0, 0), Arg);
        yield return new("IoMem.FromFile", "unaligned size", _ => IoMem.FromFile(0, 0, Page + 1), Arg);
        yield return new("IoMem.FromFile", "descriptor not open", _ => IoMem.FromFile(-1, 0, Page), Invalid);
        yield return new("IoMem.CreateAnonymous", "zero size", _ => IoMem.CreateAnonymous(0), Arg);
        yield return new("IoMem.CreateAnonymous", "unaligned size", _ => IoMem.CreateAnonymous(100), Arg);
        yield return new("VaddrRange.FromLength", "start + length overflows", _ => VaddrRange.FromLength(ulong.MaxValue - 10, 20), UVmEx, UVmError.InvalidArgs);

        // ---- Fallible readers and writers --------------------------------------------------------
        yield return new("VmReader<Fallible>.Skip", "past the reader's range", w => { VmReader<Fallible> r = w.Space.Reader(D, 8); r.Skip(9); }, OutOfRange);
        yield return new("VmReader<Fallible>.ReadVal", "fewer bytes left than the value", w => { VmReader<Fallible> r = w.Space.Reader(D, 4); r.ReadVal<ulong>(); }, OutOfRange);
        yield return new("VmReader<Fallible>.AtomicLoad32", "unaligned cursor", w => { VmReader<Fallible> r = w.Space.Reader(D + 2, 8); r.AtomicLoad32(); }, Arg);
        yield return new("VmReader<Fallible>.AtomicLoad64", "fewer than 8 bytes left", w => { VmReader<Fallible> r = w.Space.Reader(D, 4); r.AtomicLoad64(); }, Arg);
        yield return new("VmWriter<Fallible>.Skip", "past the writer's range", w => { VmWriter<Fallible> wr = w.Space.Writer(D, 8); wr.Skip(16); }, OutOfRange);
        yield return new("VmWriter<Fallible>.WriteVal", "less room than the value", w => { VmWriter<Fallible> wr = w.Space.Writer(D, 2); wr.WriteVal(1u); }, OutOfRange);
        yield return new("VmWriter<Fallible>.AtomicCompareExchange", "unaligned cursor", w => { VmWriter<Fallible> wr = w.Space.Writer(D + 4, 16); wr.AtomicCompareExchange(0UL, 1UL); }, Arg);
        yield return new("VmWriter<Fallible>.AtomicCompareExchange", "too little room", w => { VmWriter<Fallible> wr = w.Space.Writer(D, 2); wr.AtomicCompareExchange(0u, 1u); }, Arg);

        // ---- AddressSpace --------------------------------------------------------------------------
        var alloc = new AreaBackend.Alloc(false);
        var populated = new AreaBackend.Alloc(true);
        yield return new("AddressSpace.Map", "zero length", w => w.Areas.Map(0, alloc, new VmMapOptions()), UVmEx, UVmError.InvalidArgs);
        yield return new("AddressSpace.Map", "unaligned length", w => w.Areas.Map(Page + 1, alloc, new VmMapOptions()), Arg);
        yield return new("AddressSpace.Map", "alignment not a power of two", w => w.Areas.Map(Page, alloc, new VmMapOptions { Align = 3 * Page }), Arg);
        yield return new("AddressSpace.Map", "alignment below a page", w => w.Areas.Map(Page, alloc, new VmMapOptions { Align = 512 }), Arg);
        yield return new("AddressSpace.Map", "overwrite without an address", w => w.Areas.Map(Page, alloc, new VmMapOptions { CanOverwrite = true }), Arg);
        yield return new("AddressSpace.Map", "address not aligned as asked", w => w.Areas.Map(Page, alloc, new VmMapOptions { Addr = 20 * MiB + Page, Align = Huge }), Arg);
        yield return new("AddressSpace.Map", "unaligned fixed address", w => w.Areas.Map(Page, alloc, new VmMapOptions { Addr = 20 * MiB + 1 }), Arg);
        yield return new("AddressSpace.Map", "fixed range past the space", w => w.Areas.Map(2 * Page, populated, new VmMapOptions { Addr = S - Page }), UVmEx, UVmError.InvalidArgs);
        yield return new("AddressSpace.Map", "address + length overflows", w => w.Areas.Map(2 * Page, populated, new VmMapOptions { Addr = ulong.MaxValue - Page + 1 }), UVmEx, UVmError.InvalidArgs);
        yield return new("AddressSpace.Map", "fixed range over an area", w => w.Areas.Map(2 * Page, populated, new VmMapOptions { Addr = World.LazyVa + Page }), UVmEx, UVmError.MapAlreadyMappedVaddr);
        yield return new("AddressSpace.Map", "no free range that large", w => w.Areas.Map(S, alloc, new VmMapOptions()), UVmEx, UVmError.NoMemory);
        yield return new("AddressSpace.Map", "null backend", w => w.Areas.Map(Page, null!, new VmMapOptions()), ArgNull);
        yield return new("AddressSpace.Map", "null options", w => w.Areas.Map(Page, alloc, null!), ArgNull);
        yield return new("AddressSpace.Map", "disposed address space", w => w.DisposedAreas.Map(Page, alloc, new VmMapOptions()), Disposed);
        yield return new("AddressSpace.Map", "linear offset unaligned", w => w.Areas.Map(Page, new AreaBackend.LinearFrames(w.Segment, 10), new VmMapOptions()), Arg);
        yield return new("AddressSpace.Map", "linear segment too small", w => w.Areas.Map(4 * Page, new AreaBackend.LinearFrames(w.Segment, 6 * Page), new VmMapOptions()), UVmEx, UVmError.InvalidArgs);
        yield return new("AddressSpace.Map", "linear segment of another pool", w =>
        {
            using USegment s = w.OtherPool.AllocSegment(1);
            w.Areas.Map(Page, new AreaBackend.LinearFrames(s, 0), new VmMapOptions());
        }, Arg);
        yield return new("AddressSpace.Map", "linear I/O memory too small", w => w.Areas.Map(8 * Page, new AreaBackend.LinearIoMem(w.Io, 0), new VmMapOptions()), UVmEx, UVmError.InvalidArgs);
        foreach ((string name, Action<AddressSpace, VaddrRange> use) in new (string, Action<AddressSpace, VaddrRange>)[]
                 {
                     ("AddressSpace.Unmap", (a, r) => a.Unmap(r)),
                     ("AddressSpace.Protect", (a, r) => a.Protect(r, PageFlags.None)),
                     ("AddressSpace.QueryRange", (a, r) => a.QueryRange(r)),
                     ("AddressSpace.Prefault", (a, r) => a.Prefault(r, PageFaultAccess.Read)),
                 })
        {
            yield return new(name, "unaligned range", w => use(w.Areas, new VaddrRange(World.LazyVa, World.LazyVa + 100)), Arg);
            yield return new(name, "empty range", w => use(w.Areas, new VaddrRange(World.LazyVa, World.LazyVa)), UVmEx, UVmError.InvalidArgs);
            yield return new(name, "range past the space", w => use(w.Areas, new VaddrRange(S - Page, S + Page)), UVmEx, UVmError.InvalidArgs);
            yield return new(name, "disposed address space", w => use(w.DisposedAreas, Pages(0, 1)), Disposed);
        }
        yield return new("AddressSpace.Prefault", "a hole", w => w.Areas.Prefault(Pages(20 * MiB, 2), PageFaultAccess.Read), UVmEx, UVmError.PageFault);
        yield return new("AddressSpace.Prefault", "writing a read-only area", w => w.Areas.Prefault(Pages(World.ReadOnlyVa, 4), PageFaultAccess.Write), UVmEx, UVmError.PageFault);
        foreach (int pages in new[] { 0, 3, 1024 })
            yield return new("AddressSpace.FaultAroundPages", $"{pages} pages", w => w.Areas.FaultAroundPages = pages, OutOfRange);
        yield return new("AddressSpace.Fork", "disposed address space", w => w.DisposedAreas.Fork(), Disposed);
        yield return new("AddressSpace.Clear", "disposed address space", w => w.DisposedAreas.Clear(), Disposed);
    }

    private static IEnumerable<TestCaseData> Cases() =>
        Rows().Select(c => new TestCaseData(c).SetName($"Bad_input {c.EntryPoint} {c.Kind}"));

    [OneTimeSetUp]
    public void CountTheTable()
    {
        List<BadCase> rows = Rows().ToList();
        Figures.Add("bad-input cases", rows.Count);
        Figures.Add("bad-input entry points", rows.Select(r => r.EntryPoint).Distinct().Count());
        Assert.That(rows, Has.Count.GreaterThanOrEqualTo(40));
    }

    [TestCaseSource(nameof(Cases)), CancelAfter(30_000)]
    public void Is_refused_with_its_documented_error_and_changes_nothing(BadCase row)
    {
        using var world = new World();
        var before = SpaceState.Of(world.Space);
        Exception e = Assert.Throws(row.Expected, () => row.Act(world))!;
        if (row.Error is { } expected)
            Assert.That(((UVmException)e).Error, Is.EqualTo(expected), "the UVmError code");
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "a cursor was left alive");
        world.Space.Activate();
        before.AssertSame(world.Space, row.ToString());
    }
}
