using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;
using static UVm.Tests.Reliability.Harness;
using UVm.Interop;

namespace UVm.Tests.Hardening;

/// <summary>
/// Every host call site refused, through <see cref="HostRefusal"/> (the real host everywhere
/// else), by every operation that reaches it: a clear error (or an exact fault result), and the
/// page table, frames and host exactly as before.
/// </summary>
[NonParallelizable]
public sealed class HostRefusals
{
    private const int ENOMEM = 12, EACCES = 13, EMFILE = 24, EFBIG = 27, ENOSPC = 28, EIO = 5;
    private FramePool _pool = null!;
    private VmSpace _space = null!;

    [SetUp]
    public void Create()
    {
        _pool = new FramePool(8UL << 20);
        _space = new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = _pool });
        _space.Activate();
    }

    [TearDown]
    public void CheckNothingLeaked()
    {
        _space.Dispose();
        Assert.That(_pool.FramesInUse, Is.Zero, "frames leaked");
        _pool.Dispose();
    }

    private static UVmError ErrorOf(Action code) => Assert.Throws<UVmException>(() => code())!.Error;

    private static int OpenDescriptors() => Directory.GetFiles("/proc/self/fd").Length;

    // ---- mmap ---------------------------------------------------------------------------

    [TestCase(ENOMEM, UVmError.HostNoMemory)]
    [TestCase(EACCES, UVmError.HostRefused)]
    public void A_refused_map_undoes_the_batch(int errno, UVmError expected)
    {
        ulong old = MapFilled(_space, 0x40_0000, 0x11);
        using UFrame a = _pool.AllocFrame(), b = _pool.AllocFrame();
        var before = SpaceState.Of(_space);
        CursorMut c = _space.CursorMut(VaddrRange.FromLength(0x40_0000, 4 * Page));
        c.Map(a, PageProperty.New(PageFlags.RW)); // replaces the mapped frame
        c.Map(b, PageProperty.New(PageFlags.R));
        using (HostRefusal.Scope refusal = HostRefusal.Arm(HostCallSite.Mmap, errno, count: 1))
        {
            Assert.That(ErrorOf(() => c.Flusher.DispatchTlbFlush()), Is.EqualTo(expected));
            Assert.That(refusal.Refused, Is.EqualTo(1), "precondition: the host call really was refused");
        }
        c.Dispose();
        before.AssertSame(_space, "after a refused map");
        Assert.That((a.ReferenceCount, b.ReferenceCount, _pool.ReferenceCount(old)), Is.EqualTo((1, 1, 1)),
            "the new frames hold only their handles; the replaced one is mapped again");
        Assert.That(Read(_space, 0x40_0000, new byte[8]).IsOk, Is.True);
    }

    [Test]
    public void A_map_refused_on_cursor_dispose_throws_from_Dispose_and_undoes_the_batch()
    {
        using UFrame a = _pool.AllocFrame();
        var before = SpaceState.Of(_space);
        CursorMut c = _space.CursorMut(VaddrRange.FromLength(0x40_0000, Page));
        c.Map(a, PageProperty.New(PageFlags.RW));
        using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, count: 1))
            Assert.That(ErrorOf(() => c.Dispose()), Is.EqualTo(UVmError.HostNoMemory));
        Assert.That(Cursor.HeldByCurrentThread, Is.Zero, "the cursor let go of its locks");
        before.AssertSame(_space, "after a map refused on dispose");
        Assert.That(a.ReferenceCount, Is.EqualTo(1));
    }

    [Test]
    public void A_refused_batch_that_protected_then_split_a_huge_entry_is_undone_whole()
    {
        using var io = IoMem.CreateAnonymous(Paging.HugePageSize);
        const ulong Va2M = 4UL << 20;
        // Cursors wider than the entry, so it is a leaf of their own node (a cursor exactly one
        // entry wide works a level lower and maps base pages).
        var wide = VaddrRange.FromLength(Va2M - Paging.HugePageSize, 3 * Paging.HugePageSize);
        using (CursorMut c = _space.CursorMut(wide))
        {
            c.Jump(Va2M);
            c.MapIoMem(io, PageProperty.New(PageFlags.RW), Paging.HugePageSize, 0);
        }
        var before = SpaceState.Of(_space);
        Assert.That(before.Slots.Single().Range.Length, Is.EqualTo(Paging.HugePageSize), "precondition: one 2 MiB entry");
        using (CursorMut c = _space.CursorMut(wide))
        {
            c.Jump(Va2M);
            // The whole entry loses W, then a page of it is unmapped (splitting it), in one batch.
            Assert.That(c.ProtectNext(Paging.HugePageSize, (ref PageFlags f, ref CachePolicy _) => f = PageFlags.R), Is.Not.Null);
            c.Jump(Va2M + Page);
            using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, count: 1))
                Assert.That(ErrorOf(() => c.Unmap(Page)), Is.EqualTo(UVmError.HostNoMemory));
        }
        // Page by page the same as before: every page read-write again, none missing.
        List<MappedSlot> now = MappedSlots(_space);
        Assert.That(now.Sum(s => (long)s.Range.Length), Is.EqualTo((long)Paging.HugePageSize));
        Assert.That(now.All(s => s.Prop.Flags.HasFlag(PageFlags.RW) && s.Io), Is.True, string.Join(", ", now));
        Assert.That(MirrorDiffs(_space), Is.Empty);
        Assert.That(Write(_space, Va2M + 3 * Page, new byte[8]).IsOk, Is.True);
    }

    [Test]
    public void A_refused_unmap_leaves_everything_mapped()
    {
        MapFilled(_space, 0x40_0000, 0x22);
        MapFilled(_space, 0x40_2000, 0x33);
        var before = SpaceState.Of(_space);
        using (CursorMut c = _space.CursorMut(VaddrRange.FromLength(0x40_0000, 4 * Page)))
        using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, count: 1))
            Assert.That(ErrorOf(() => c.Unmap(4 * Page)), Is.EqualTo(UVmError.HostNoMemory));
        before.AssertSame(_space, "after a refused unmap");
        var buffer = new byte[8];
        Assert.That(Read(_space, 0x40_2000, buffer).IsOk && buffer[0] == 0x33, Is.True);
    }

    [Test]
    public void A_refused_protect_leaves_the_rights()
    {
        MapFilled(_space, 0x40_0000, 0x22);
        var before = SpaceState.Of(_space);
        using (CursorMut c = _space.CursorMut(VaddrRange.FromLength(0x40_0000, Page)))
        {
            c.ProtectNext(Page, (ref PageFlags f, ref CachePolicy _) => f = PageFlags.R);
            using (HostRefusal.Arm(HostCallSite.Mprotect, ENOMEM, count: 1))
                Assert.That(ErrorOf(() => c.Flusher.DispatchTlbFlush()), Is.EqualTo(UVmError.HostNoMemory));
        }
        before.AssertSame(_space, "after a refused protect");
        Assert.That(Write(_space, 0x40_0000, new byte[8]).IsOk, Is.True, "still writable, as the table says");
    }

    [Test]
    public void A_refused_area_protect_changes_neither_area_nor_pages()
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
        ulong va = areas.Map(4 * Page, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Flags = PageFlags.RW });
        var before = SpaceState.Of(areas.Space);
        using (HostRefusal.Arm(HostCallSite.Mprotect, ENOMEM, count: 1))
            Assert.That(ErrorOf(() => areas.Protect(VaddrRange.FromLength(va, 4 * Page), PageFlags.R)), Is.EqualTo(UVmError.HostNoMemory));
        before.AssertSame(areas.Space, "after a refused area protect");
        Assert.That(areas.Areas.Single().Flags, Is.EqualTo(PageFlags.RW));
    }

    [Test]
    public void A_refused_refill_leaves_the_fault_unresolved_not_thrown()
    {
        MapFilled(_space, 0x40_0000, 0x44);
        // The host forgets the page (as a lazy mirror would): the table still allows it.
        Libc.Mmap(_space.HostBase + 0x40_0000, (nuint)Page, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0);
        var buffer = new byte[16];
        CopyResult r;
        using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, count: 1))
            r = Read(_space, 0x40_0000 - 8, buffer);
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.Zero, "nothing mapped before it either");
        r = Read(_space, 0x40_0000, buffer);
        Assert.That(r.IsOk && buffer[0] == 0x44, Is.True, "refilled once the host agrees");
        Assert.That(MirrorDiffs(_space), Is.Empty);
    }

    [TestCase(ENOMEM)]
    [TestCase(EACCES)]
    public void A_refused_demand_zero_fault_fails_the_copy_exactly(int errno)
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
        ulong va = areas.Map(1UL << 20, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW, Align = 1UL << 20 });
        areas.Space.Activate();
        Assert.That(Write(areas.Space, va, new byte[Page]).IsOk, Is.True, "the first window is resolved");
        var before = SpaceState.Of(areas.Space);
        CopyResult r;
        using (HostRefusal.Arm(HostCallSite.Mmap, errno, count: 1))
            r = Write(areas.Space, va, new byte[64 * Page]);
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.EqualTo(16 * Page), "up to the window that could not be mapped");
        before.AssertSame(areas.Space, "after a refused demand-zero fault");
        Assert.That(Write(areas.Space, va, new byte[64 * Page]).IsOk, Is.True);
    }

    [Test]
    public void A_refused_arena_is_HostNoMemory()
    {
        long bound = HostMappingBudget.ProcessBound;
        using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, count: 1))
            Assert.That(ErrorOf(() => new VmSpace(new VmSpaceOptions { Size = 1UL << 30, Pool = _pool })), Is.EqualTo(UVmError.HostNoMemory));
        Assert.That(HostMappingBudget.ProcessBound, Is.EqualTo(bound), "no budget is held for the space that never was");
    }

    [Test]
    public void A_fork_whose_child_map_is_refused_leaves_the_parent_with_its_frames_and_contents()
    {
        MapFilled(_space, 0x40_0000, 0x55, PageFlags.R);
        var before = SpaceState.Of(_space);
        // The child's arena is the first mmap, its first map the second.
        using (HostRefusal.Scope refusal = HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, skip: 1, count: 1))
        {
            Assert.That(ErrorOf(() => _space.ForkCopyOnWrite()), Is.EqualTo(UVmError.HostNoMemory));
            Assert.That(refusal.Refused, Is.EqualTo(1));
        }
        before.AssertSame(_space, "after a refused fork");
    }

    // ---- mprotect, pwritev: copy-on-write -----------------------------------------------

    [TestCase("Pwritev", ENOSPC)]
    [TestCase("Pwritev", ENOMEM)]
    [TestCase("Mmap", ENOMEM)]
    public void A_refused_copy_on_write_fails_the_write_exactly(string siteName, int errno)
    {
        var site = Enum.Parse<HostCallSite>(siteName);
        using var parent = new AddressSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
        ulong va = parent.Map(16 * Page, new AreaBackend.Alloc(Populate: true), new VmMapOptions { Flags = PageFlags.RW });
        using AddressSpace child = parent.Fork();
        child.Space.Activate();
        var before = SpaceState.Of(child.Space);
        long inUse = _pool.FramesInUse;
        CopyResult r;
        using (HostRefusal.Arm(site, errno, count: 1))
            r = Write(child.Space, va + 8, new byte[8]);
        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Bytes, Is.Zero);
        before.AssertSame(child.Space, "after a refused copy-on-write");
        Assert.That(_pool.FramesInUse, Is.EqualTo(inUse), "no copy frame left behind");
        Assert.That(Write(child.Space, va + 8, new byte[8]).IsOk, Is.True);
    }

    // ---- fallocate ------------------------------------------------------------------------

    [Test]
    public void A_refused_punch_keeps_freed_frames_out_of_reach_until_it_succeeds()
    {
        using var small = new FramePool(2UL << 20);
        var frames = new List<UFrame>();
        for (int i = 0; i < 512; i++)
        {
            UFrame f = small.AllocFrame();
            VmWriter<Infallible> w = f.Writer();
            w.WriteVal(0xDEADBEEFUL);
            frames.Add(f);
        }
        using (HostRefusal.Arm(HostCallSite.Fallocate, EIO))
        {
            foreach (UFrame f in frames) f.Dispose();
            Assert.That(small.FramesInUse, Is.Zero);
            Assert.That(small.FramesAwaitingPunch, Is.EqualTo(512), "not punched, so not reusable");
            Assert.That(ErrorOf(() => small.AllocFrame()), Is.EqualTo(UVmError.NoMemory), "a dirty frame is never handed out");
        }
        using UFrame again = small.AllocFrame();
        VmReader<Infallible> r = again.Reader();
        Assert.That(r.ReadVal<ulong>(), Is.Zero, "punched once the host agreed: it reads zero");
        Assert.That(small.FramesAwaitingPunch, Is.Zero);
    }

    // ---- memfd_create, ftruncate, dup: no descriptor leaks ------------------------------

    [TestCase("MemfdCreate", EMFILE, UVmError.HostRefused)]
    [TestCase("Ftruncate", EFBIG, UVmError.HostRefused)]
    [TestCase("Mmap", ENOMEM, UVmError.HostNoMemory)]
    public void A_refused_pool_creation_leaks_no_descriptor(string siteName, int errno, UVmError expected)
    {
        var site = Enum.Parse<HostCallSite>(siteName);
        int fds = OpenDescriptors();
        using (HostRefusal.Arm(site, errno, count: 1))
            Assert.That(ErrorOf(() => new FramePool(2UL << 20)), Is.EqualTo(expected));
        Assert.That(OpenDescriptors(), Is.EqualTo(fds));
        using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, skip: 1, count: 1)) // the metadata's mapping
            Assert.That(ErrorOf(() => new FramePool(2UL << 20)), Is.EqualTo(UVmError.HostNoMemory));
        Assert.That(OpenDescriptors(), Is.EqualTo(fds));
    }

    [TestCase("MemfdCreate", EMFILE)]
    [TestCase("Ftruncate", EFBIG)]
    public void A_refused_anonymous_IoMem_leaks_no_descriptor(string siteName, int errno)
    {
        var site = Enum.Parse<HostCallSite>(siteName);
        int fds = OpenDescriptors();
        using (HostRefusal.Arm(site, errno, count: 1))
            Assert.That(ErrorOf(() => IoMem.CreateAnonymous(1UL << 20)), Is.EqualTo(UVmError.HostRefused));
        Assert.That(OpenDescriptors(), Is.EqualTo(fds));
    }

    [Test]
    public void A_refused_dup_of_a_file_is_HostRefused()
    {
        using var io = IoMem.CreateAnonymous(1UL << 20);
        int fds = OpenDescriptors();
        using (HostRefusal.Arm(HostCallSite.Dup, EMFILE, count: 1))
            Assert.That(ErrorOf(() => IoMem.FromFile(io.Fd, 0, 1UL << 20)), Is.EqualTo(UVmError.HostRefused));
        Assert.That(OpenDescriptors(), Is.EqualTo(fds));
    }

    // ---- madvise, munmap ------------------------------------------------------------------

    [Test]
    public void A_refused_prefault_advice_still_resolves_every_page()
    {
        using var areas = new AddressSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
        ulong va = areas.Map(32 * Page, new AreaBackend.Alloc(Populate: false), new VmMapOptions { Flags = PageFlags.RW });
        using (HostRefusal.Scope refusal = HostRefusal.Arm(HostCallSite.Madvise, ENOMEM))
        {
            areas.Prefault(VaddrRange.FromLength(va, 32 * Page), PageFaultAccess.Write);
            Assert.That(refusal.Refused, Is.EqualTo(1), "precondition: the advice was refused");
        }
        Assert.That(MappedSlots(areas.Space).Count, Is.EqualTo(32));
        Assert.That(MirrorDiffs(areas.Space), Is.Empty);
    }

    [Test]
    public void A_refused_arena_unmap_still_gives_every_frame_back_and_leaves_nothing_reachable()
    {
        var space = new VmSpace(new VmSpaceOptions { Size = 64UL << 20, Pool = _pool });
        MapFilled(space, 0x10_0000, 0x66);
        nint host = space.HostBase;
        using (HostRefusal.Scope refusal = HostRefusal.Arm(HostCallSite.Munmap, ENOMEM))
        {
            space.Dispose();
            Assert.That(refusal.Refused, Is.EqualTo(1));
        }
        Assert.That(_pool.FramesInUse, Is.Zero, "the frames went back: the arena was reset first");
        List<HostVma> left = ProcMaps.Read((ulong)host, (ulong)host + (64UL << 20));
        Assert.That(left.Where(v => v.Inode != 0), Is.Empty, "no frame is mapped where the arena was");
        Libc.Munmap(host, (nuint)((64UL << 20) + Paging.HugePageSize)); // the test gives the leaked reservation back
    }
}
