using NUnit.Framework;
using UVm.Areas;
using UVm.Frames;
using UVm.Interop;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Snapshots;
using static UVm.Tests.TestSupport.Refusals;

namespace UVm.Tests.Hardening;

/// <summary>
/// Host copies attacked: every host call of a reset, a snapshot, a fork, a write-watch restart,
/// an unmap and a protect refused in turn while the space holds written host copies (some under
/// the refused batch, whose refill would drop them unless they are written back); the drop of a
/// reset refused twice; and writers racing resets, forks and snapshots. A refused call leaves
/// every byte the guest wrote as it was and the host never more permissive than the table; a
/// racing writer's pages read either the snapshot's value or one it wrote.
/// </summary>
[NonParallelizable]
public sealed class HostileHostCopies : HostCopyFixture
{
    private const int ENOMEM = 12;
    private const int AreaLen = 32;

    /// <summary>Every host call site, by name (the enum is internal; NUnit needs public parameter types).</summary>
    private static readonly string[] Sites = Enum.GetNames<HostCallSite>();

    /// <summary>The calls refused.</summary>
    private static readonly string[] Calls = { "Reset", "Snapshot", "Fork", "ResetWriteWatch", "Unmap", "Protect" };

    /// <summary>What a space holds for the guest: every mapped page of the two areas and its bytes, read from the host (no fault).</summary>
    private static SortedDictionary<ulong, byte[]> ContentsOf(AddressSpace space)
    {
        var contents = new SortedDictionary<ulong, byte[]>();
        foreach (ulong va in PagesOf(Span(AreaVa, AreaLen * Page)).Concat(PagesOf(Span(LazyVa, 16 * Page))))
            if (SlotAt(space, va).IsMapped) contents[va] = HostPage(space, va);
        return contents;
    }

    private static void AssertSameContents(SortedDictionary<ulong, byte[]> before, SortedDictionary<ulong, byte[]> now, string what)
    {
        Assert.That(now.Keys, Is.EqualTo(before.Keys), $"{what}: the same pages are mapped");
        foreach ((ulong va, byte[] bytes) in before)
        {
            if (now[va].AsSpan().SequenceEqual(bytes)) continue;
            int at = now[va].AsSpan().CommonPrefixLength(bytes);
            Assert.Fail($"{what}: page 0x{va:x} changed at byte {at}: 0x{now[va][at]:x2}, was 0x{bytes[at]:x2} (first 8 bytes now {BitConverter.ToUInt64(now[va])}, were {BitConverter.ToUInt64(bytes)})");
        }
    }

    /// <summary>Asserts the host grants nothing the table does not: missing mappings and narrower rights are allowed (faults refill them), nothing else.</summary>
    private static void AssertNeverMorePermissive(AddressSpace space, string what)
    {
        MirrorReport diffs = HostMirror.Compare(space.Space, 10_000);
        foreach (MirrorDifference d in diffs)
        {
            bool narrower = d.Kind == MirrorDifferenceKind.WrongRights && (d.Actual.Rights & ~d.Expected.Rights) == 0;
            Assert.That(d.Kind == MirrorDifferenceKind.Missing || narrower, Is.True, $"{what}: the host grants more than the table or maps something else:\n{diffs}");
        }
    }

    /// <summary>
    /// A fresh space as <see cref="HostCopyFixture.Prepared"/> makes it but with a 32-page area, a
    /// snapshot, then: nine pages written whole (host copies, among them pages 9..11 and 20 under
    /// the unmap's range and all under the protect's), page 10 then made read-only (a logged
    /// change that a reset restores, its span reaching over the copies after it), and a page of
    /// the lazy area filled (another logged change, one span with the first).
    /// </summary>
    private (AddressSpace Space, VmSnapshot Snapshot, ulong[] Written) PreparedWithCopies()
    {
        AddressSpace space = NewAddressSpace();
        space.FaultAroundPages = 1;
        ulong area = space.Map(AreaLen * Page, Lazy, At(AreaVa));
        for (ulong i = 0; i < AreaLen; i++) WriteU64(space, area + i * Page, 1000 + i);
        space.Map(16 * Page, Lazy, At(LazyVa));
        VmSnapshot snapshot = Track(space.Snapshot());
        ulong[] written = { 0, 1, 2, 5, 9, 10, 11, 20, 31 };
        foreach (ulong i in written) Write(space, area + i * Page, Filled((byte)(0x40 + i)));
        space.Protect(Span(area + 10 * Page, Page), PageFlags.R);
        WriteU64(space, LazyVa + 2 * Page, 4242);
        Assert.That(CopiedPages(space, Span(AreaVa, AreaLen * Page)), Is.EqualTo(written.Select(i => area + i * Page)), "precondition: nine written host copies");
        return (space, snapshot, written);
    }

    // ---- Dispose racing host copies ------------------------------------------------------------

    /// <summary>
    /// An address space holding written host copies is disposed while a thread writes its pages
    /// and another resets it: every write either lands or fails with a page fault once the space
    /// is disposed (never an exception, never a crash), the reset either completes or says the
    /// space is disposed, and every frame goes back to the pool (the fixture checks it).
    /// </summary>
    [Test, CancelAfter(60_000)]
    public void Dispose_racing_a_writer_and_a_reset_of_written_host_copies_ends_cleanly([Values(40)] int rounds)
    {
        int seed = Seeds.For(nameof(Dispose_racing_a_writer_and_a_reset_of_written_host_copies_ends_cleanly));
        var random = new Random(seed);
        int cut = 0, resetsDone = 0, resetsRefused = 0;
        for (int round = 0; round < rounds; round++)
        {
            (AddressSpace space, VmSnapshot snapshot, _) = PreparedWithCopies();
            using var started = new CountdownEvent(2);
            bool writerCut = false;
            TestThread writer = TestThread.Start("writer", () =>
            {
                started.Signal();
                for (ulong k = 0; k < 4096; k++)
                {
                    ulong page = k % AreaLen;
                    if (page == 10) continue; // read-only until the reset (PreparedWithCopies): a write there faults by right
                    ulong va = AreaVa + page * Page + (k % 8) * 8;
                    if (space.Space.TryWrite(va, k)) continue;
                    Assert.That(space.Space.IsDisposed, Is.True, "only Dispose fails a write here");
                    writerCut = true;
                    return;
                }
            });
            Exception? resetOutcome = null;
            TestThread resetter = TestThread.Start("resetter", () =>
            {
                started.Signal();
                resetOutcome = Catch(() => space.Reset(snapshot));
            });
            Assert.That(started.Wait(Deadlines.Generous), Is.True, "both threads started");
            Thread.SpinWait(random.Next(0, 20_000));
            space.Dispose();
            writer.Join(TimeSpan.FromSeconds(30));
            resetter.Join(TimeSpan.FromSeconds(30));
            Assert.That(resetOutcome, Is.Null.Or.InstanceOf<ObjectDisposedException>(), $"seed {seed}, round {round}: the reset completes or finds the space disposed");
            if (resetOutcome == null) resetsDone++;
            else resetsRefused++;
            if (writerCut) cut++;
            Assert.That(space.Space.IsDisposed, Is.True);
        }
        TestContext.Out.WriteLine($"seed {seed}: {rounds} rounds, {cut} writers cut by Dispose, {resetsDone} resets done, {resetsRefused} refused as disposed");
        Assert.That(cut + resetsRefused, Is.GreaterThan(0), $"seed {seed}: Dispose raced the others in at least one round (precondition)");
    }

    // ---- 8. refusals ------------------------------------------------------------------------

    [Test]
    public void A_call_refused_at_any_host_call_keeps_every_byte_the_guest_wrote(
        [ValueSource(nameof(Calls))] string call, [ValueSource(nameof(Sites))] string siteName)
    {
        HostCallSite site = Enum.Parse<HostCallSite>(siteName);
        AddressSpace space = null!;
        VmSnapshot snapshot = null!;
        SortedDictionary<ulong, byte[]> before = null!;
        List<string> slotsBefore = null!;
        List<VmArea> areasBefore = null!;
        long framesBefore = 0;
        int copied = 0, refusedCalls = 0, succeeded = 0;
        var range = Span(AreaVa, AreaLen * Page);
        int refusals = RefuseEachCall(site, () =>
        {
            if (space != null) { space.Dispose(); snapshot.Dispose(); }
            (space, snapshot, ulong[] written) = PreparedWithCopies();
            space.Space.Activate();
            copied = written.Length;
            before = ContentsOf(space);
            slotsBefore = Snapshot(space, Span(0, 8 * MiB));
            areasBefore = space.Areas.ToList();
            framesBefore = Pool.FramesInUse;
            AddressSpace s = space;
            VmSnapshot snap = snapshot;
            return call switch
            {
                "Reset" => () => s.Reset(snap),
                "Snapshot" => () => Track(s.Snapshot()),
                "Fork" => () => Track(s.Fork()),
                "ResetWriteWatch" => () => s.ResetWriteWatch(range),
                "Unmap" => () => s.Unmap(Span(AreaVa + 8 * Page, 16 * Page)),
                "Protect" => () => s.Protect(range, PageFlags.R),
                _ => throw new ArgumentException(call),
            };
        }, (e, refused) =>
        {
            string what = $"{call} with {site} refused ({refused})";
            if (e == null)
            {
                succeeded++;
                CheckSuccess(call, space, snapshot, before, what);
                return;
            }
            refusedCalls++;
            // Read before anything can fault: the bytes, the frames, the table, the host.
            AssertSameContents(before, ContentsOf(space), what);
            if (call is "Reset" or "Unmap" or "Protect")
            {
                Assert.That(Snapshot(space, Span(0, 8 * MiB)), Is.EqualTo(slotsBefore), $"{what}: the page table");
                Assert.That(Pool.FramesInUse, Is.EqualTo(framesBefore), $"{what}: frames in use");
            }
            else
            {
                // The copies may have become frames of their own first (contents unchanged).
                Assert.That(Pool.FramesInUse, Is.EqualTo(framesBefore).Or.EqualTo(framesBefore + copied), $"{what}: frames in use");
            }
            // A refused AddressSpace.Unmap removes its areas anyway (a bug of its own, tested below).
            if (call != "Unmap") Assert.That(space.Areas, Is.EqualTo(areasBefore), $"{what}: the areas");
            AssertNeverMorePermissive(space, what);
            // Through the guest now: faults refill whatever the refusal left missing.
            foreach ((ulong va, byte[] bytes) in before) Assert.That(Read(space, va, (int)Page), Is.EqualTo(bytes), $"{what}: 0x{va:x} through the guest");
            AssertHostMirrors(space);
        }, call);
        TestContext.Out.WriteLine($"{call}, {site}: {refusals} refusals, {refusedCalls} calls refused, {succeeded} succeeded");
        Assert.That(succeeded, Is.GreaterThanOrEqualTo(1), "the last, unrefused, call succeeded");
    }

    /// <summary>What each call must have done when it succeeded (possibly after a refusal it recovered from).</summary>
    private void CheckSuccess(string call, AddressSpace space, VmSnapshot snapshot, SortedDictionary<ulong, byte[]> before, string what)
    {
        switch (call)
        {
            case "Reset":
                for (ulong i = 0; i < AreaLen; i++)
                {
                    byte[] page = HostPage(space, AreaVa + i * Page);
                    Assert.That(BitConverter.ToUInt64(page), Is.EqualTo(1000 + i), $"{what}: page {i} after the reset");
                    Assert.That(page.AsSpan(8).ContainsAnyExcept((byte)0), Is.False, $"{what}: page {i} after the reset is the snapshot's");
                }
                Assert.That(CopiedPages(space, Span(0, 8 * MiB)), Is.Empty, $"{what}: every copy dropped");
                Assert.That(space.Reset(snapshot), Is.Zero, $"{what}: nothing left for a second reset");
                break;
            case "Unmap":
                foreach ((ulong va, byte[] bytes) in before)
                {
                    bool gone = va >= AreaVa + 8 * Page && va < AreaVa + 24 * Page;
                    Assert.That(SlotAt(space, va).IsMapped, Is.EqualTo(!gone), $"{what}: 0x{va:x}");
                    if (!gone) Assert.That(HostPage(space, va), Is.EqualTo(bytes), $"{what}: 0x{va:x} kept");
                }
                break;
            default:
                AssertSameContents(before, ContentsOf(space), what);
                break;
        }
        AssertHostMirrors(space);
    }

    /// <summary>
    /// An unmap the host refuses (the unmap itself, or the scan for the host copies under it)
    /// leaves the pages mapped in the table; the areas must still describe them.
    /// </summary>
    [Test]
    public void Unmap_refused_by_the_host_keeps_its_areas([Values("Mmap", "PagemapScan")] string siteName)
    {
        HostCallSite site = Enum.Parse<HostCallSite>(siteName);
        (AddressSpace space, VmSnapshot _, _) = PreparedWithCopies();
        space.Space.Activate();
        List<VmArea> before = space.Areas.ToList();
        Exception? e;
        using (HostRefusal.Arm(site, ENOMEM, count: 1))
            e = Catch(() => space.Unmap(Span(AreaVa + 8 * Page, 16 * Page)));
        Assert.That(e, Is.InstanceOf<UVmException>().With.Property("Error").EqualTo(UVmError.HostNoMemory), "precondition: refused");
        Assert.That(SlotAt(space, AreaVa + 9 * Page).IsMapped, Is.True, "the table still maps the pages");
        Assert.That(space.Areas, Is.EqualTo(before), "so the areas must still hold them");
    }

    /// <summary>
    /// A write-watch restart the host refuses changes nothing (documented: "the pages keep their
    /// rights and the watch its old state"): the watch did not start, so the space must go on
    /// using host copies (<see cref="VmSpaceOptions.HostCopies"/>: "used ... while no write watch
    /// was started on the space"). Seen from outside: a later snapshot's pages are still copied
    /// by the host, with no fault.
    /// </summary>
    [Test]
    public void ResetWriteWatch_refused_while_dissolving_leaves_host_copies_on()
    {
        (AddressSpace space, VmSnapshot _, _) = PreparedWithCopies();
        space.Space.Activate();
        using (HostRefusal.Arm(HostCallSite.Mmap, ENOMEM, count: 1)) // the dissolve's batch
            Assert.That(Catch(() => space.ResetWriteWatch(Span(AreaVa, AreaLen * Page))), Is.InstanceOf<UVmException>(), "precondition: refused");
        Assert.That(space.WrittenPages(Span(AreaVa, AreaLen * Page)), Is.Empty, "precondition: no watch started");
        Track(space.Snapshot());
        var counters = Counters(space);
        WriteU64(space, AreaVa + 3 * Page, 1);
        Assert.That(Counters(space), Is.EqualTo(counters), "a write after a later snapshot is the host's copy, with no fault");
        Assert.That(space.Space.UsesHostCopies, Is.True);
    }

    /// <summary>
    /// The last step of a reset, dropping the copies, cannot be taken back; if the host refuses
    /// it twice (process_madvise, then madvise range by range) the reset throws. Whatever it
    /// throws, the address space must still be one whole thing: its areas are the ones its page
    /// table maps (the table was reset to the snapshot's, so the areas must be the snapshot's too).
    /// </summary>
    [Test]
    public void Reset_whose_drop_is_refused_twice_leaves_areas_and_page_table_agreeing()
    {
        (AddressSpace space, VmSnapshot snapshot, _) = PreparedWithCopies();
        space.Space.Activate();
        ulong added = space.Map(4 * Page, Populated, At(8 * MiB)); // an area the snapshot does not have
        Exception? e;
        using (HostRefusal.Arm(HostCallSite.Madvise, ENOMEM, count: 2))
            e = Catch(() => space.Reset(snapshot));
        TestContext.Out.WriteLine($"the reset threw {e?.GetType().Name}: {e?.Message}");
        bool tableReset = !SlotAt(space, added).IsMapped;
        if (e is UVmException)
        {
            Assert.That(tableReset, Is.False, "a UVmException means nothing changed");
        }
        else
        {
            Assert.That(tableReset, Is.True, "the table was reset");
            Assert.That(space.Areas, Is.EqualTo(snapshot.Areas), $"the table is the snapshot's, so must the areas be (the reset threw {e?.GetType().Name})");
        }
        Assert.That(space.Reset(snapshot), Is.GreaterThanOrEqualTo(0));
        Assert.That(space.Areas, Is.EqualTo(snapshot.Areas));
        AssertArea(space, AreaVa, i => 1000 + i, "a second reset");
    }

    /// <summary>
    /// A fork, a snapshot and a write-watch restart give every written host copy a frame first;
    /// with too few frames left in the pool they must fail, with nothing changed: the copies
    /// keep their contents and their write access, no frame is kept, and once frames are free
    /// again the call succeeds.
    /// </summary>
    [Test]
    public void Fork_snapshot_and_watch_restart_without_frames_for_the_copies_fail_and_change_nothing([Values("Fork", "Snapshot", "ResetWriteWatch")] string call)
    {
        const int N = 96;
        using var pool = new FramePool(2 * MiB); // 512 frames
        using var space = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = pool }) { FaultAroundPages = 1 };
        space.Space.Activate();
        ulong area = space.Map(N * Page, Populated, At(AreaVa));
        using (VmSnapshot snapshot = space.Snapshot())
        {
            for (ulong i = 0; i < N; i++) WriteU64(space, area + i * Page + 8, i + 1);
            Assert.That(CopiedPages(space, Span(area, N * Page)), Has.Count.EqualTo(N), "precondition: every page a host copy");
            var filler = new List<UFrame>();
            while (pool.FramesInUse < (long)(pool.Capacity / Page) - 10) filler.Add(pool.AllocFrame()); // ten frames left for 96 copies
            long frames = pool.FramesInUse;
            List<string> slots = Snapshot(space, Span(area, N * Page));
            Exception? e = Catch(() =>
            {
                switch (call)
                {
                    case "Fork": space.Fork().Dispose(); break;
                    case "Snapshot": space.Snapshot().Dispose(); break;
                    default: space.ResetWriteWatch(Span(area, N * Page)); break;
                }
            });
            TestContext.Out.WriteLine($"{call} with ten frames for {N} copies: {e?.GetType().Name} {e?.Message}");
            Assert.That(e, Is.InstanceOf<UVmException>().With.Property("Error").EqualTo(UVmError.NoMemory), $"{call}: out of frames for the copies");
            Assert.That(pool.FramesInUse, Is.EqualTo(frames), "no frame kept");
            Assert.That(Snapshot(space, Span(area, N * Page)), Is.EqualTo(slots), "the page table is as it was");
            Assert.That(CopiedPages(space, Span(area, N * Page)), Has.Count.EqualTo(N), "every copy is still the host's");
            for (ulong i = 0; i < N; i++) Assert.That(HostU64(space, area + i * Page + 8), Is.EqualTo(i + 1), $"page {i}");
            AssertHostMirrors(space); // the copies have their write access back
            var counters = Counters(space);
            WriteU64(space, area + 5 * Page, 55);
            Assert.That(Counters(space), Is.EqualTo(counters), "still written with no fault");

            foreach (UFrame f in filler) f.Dispose();
            switch (call)
            {
                case "Fork": space.Fork().Dispose(); break;
                case "Snapshot": space.Snapshot().Dispose(); break;
                default: space.ResetWriteWatch(Span(area, N * Page)); break;
            }
            for (ulong i = 0; i < N; i++) Assert.That(ReadU64(space, area + i * Page + 8), Is.EqualTo(i + 1), $"page {i} after the call succeeded");
            Assert.That(ReadU64(space, area + 5 * Page), Is.EqualTo(55UL));
            AssertHostMirrors(space);
        }
        space.Dispose();
        Parent.Space.Activate();
        Assert.That(pool.FramesInUse, Is.Zero);
    }

    // ---- 10. races ----------------------------------------------------------------------------

    /// <summary>A writer's value: a tag, the page and a sequence number, so a torn or misplaced word is recognised.</summary>
    private static ulong Tagged(ulong page, ulong seq) => 0xC0DE_0000_0000_0000UL | (page << 32) | seq;

    /// <summary>
    /// Asserts word <paramref name="word"/> of page <paramref name="page"/> in <paramref name="space"/>
    /// is the snapshot's (<paramref name="original"/>) or one the writer wrote there (sequence at most <paramref name="last"/>).
    /// </summary>
    private static void AssertSnapshotOrWritten(ulong value, ulong page, ulong original, ulong last, string what)
    {
        if (value == original) return;
        Assert.That(value >> 48, Is.EqualTo(0xC0DEUL), $"{what}: page {page} holds 0x{value:x}, neither the snapshot's nor a writer's");
        Assert.That((value >> 32) & 0xFFFF, Is.EqualTo(page), $"{what}: page {page} holds a value written to another page (0x{value:x})");
        Assert.That(value & 0xFFFF_FFFF, Is.LessThanOrEqualTo(last), $"{what}: page {page} holds a value never written (0x{value:x})");
    }

    [Test, CancelAfter(60_000)]
    public void A_writer_racing_resets_forks_and_snapshots_leaves_only_snapshot_or_written_values([Values(150)] int operations)
    {
        int seed = Seeds.For(nameof(A_writer_racing_resets_forks_and_snapshots_leaves_only_snapshot_or_written_values));
        var random = new Random(seed);
        Parent.FaultAroundPages = 1;
        ulong area = Parent.Map(AreaLen * Page, Lazy, At(AreaVa));
        for (ulong i = 0; i < AreaLen; i++) WriteU64(Parent, area + i * Page, 1000 + i);
        VmSnapshot snapshot = Track(Parent.Snapshot());
        var last = new ulong[AreaLen]; // the writer's last sequence number per page (only the writer writes it until it stops)
        long writes = 0, contended = 0;
        var stop = new ManualResetEventSlim();
        int writerSeed = random.Next();
        TestThread writer = TestThread.Start("writer", () =>
        {
            Parent.Space.Activate();
            var r = new Random(writerSeed);
            for (ulong seq = 1; !stop.IsSet; seq++)
            {
                ulong page = (ulong)r.Next(AreaLen);
                ulong word = (ulong)r.Next(2) * (Page - 8); // the first or the last word of the page
                // Published before the store: whatever a page holds was published first.
                Volatile.Write(ref last[page], seq);
                // A store whose page the other thread keeps taking rights from (a fork, a snapshot,
                // a reset landing between each resolution and its retry) may give up with a page
                // fault (FallibleIo's retry bound); tried again, it must succeed.
                IoResult<ulong> done = default;
                for (int attempt = 0; attempt < 1000; attempt++)
                {
                    VmWriter<Fallible> w = Parent.Space.Writer(area + page * Page + word, 8);
                    done = w.AtomicStore(Tagged(page, seq));
                    if (done.IsOk || done.Error != UVmError.PageFault) break;
                    Interlocked.Increment(ref contended);
                }
                if (!done.IsOk) throw new AssertionException($"write {seq} to page {page} failed: {done.Error}");
                Interlocked.Increment(ref writes);
            }
            VmSpace.Deactivate();
        });
        var budget = new LoopBudget("resets, forks and snapshots racing a writer", TimeSpan.FromSeconds(10));
        int resets = 0, forks = 0, snapshots = 0;
        try
        {
            for (int op = 0; op < operations && writer.IsAlive; op++)
            {
                budget.Check($"{op} of {operations} operations");
                switch (random.Next(3))
                {
                    case 0:
                        Parent.Reset(snapshot);
                        resets++;
                        break;
                    case 1:
                        using (AddressSpace child = Parent.Fork())
                        {
                            ulong[] seen = Enumerable.Range(0, AreaLen).Select(p => Volatile.Read(ref last[p])).ToArray();
                            for (ulong p = 0; p < AreaLen; p++)
                            {
                                // Everything the child holds was written before the fork, so before 'seen' was read.
                                AssertSnapshotOrWritten(HostU64(child, area + p * Page), p, 1000 + p, seen[p], $"seed {seed}, fork {forks}, word 0");
                                AssertSnapshotOrWritten(HostU64(child, area + p * Page + Page - 8), p, 0, seen[p], $"seed {seed}, fork {forks}, last word");
                            }
                            AssertHostMirrors(child);
                        }
                        forks++;
                        break;
                    default:
                        Parent.Snapshot().Dispose();
                        snapshots++;
                        break;
                }
                Thread.Yield();
            }
        }
        finally
        {
            stop.Set();
            writer.Join(TimeSpan.FromSeconds(30));
            Parent.Space.Activate();
        }
        TestContext.Out.WriteLine($"seed {seed}: {Interlocked.Read(ref writes)} writes racing {resets} resets, {forks} forks, {snapshots} snapshots ({Interlocked.Read(ref contended)} stores tried again after a page fault under contention)");
        Assert.That(Interlocked.Read(ref writes), Is.GreaterThan(0), "the writer wrote");
        for (ulong p = 0; p < AreaLen; p++)
        {
            AssertSnapshotOrWritten(HostU64(Parent, area + p * Page), p, 1000 + p, last[p], $"seed {seed}, at the end, word 0");
            AssertSnapshotOrWritten(HostU64(Parent, area + p * Page + Page - 8), p, 0, last[p], $"seed {seed}, at the end, last word");
            Assert.That(BitConverter.ToUInt64(Read(Parent, area + p * Page, 8)), Is.EqualTo(HostU64(Parent, area + p * Page)), "the guest reads what the host holds");
        }
        AssertHostMirrors(Parent);
        Parent.Reset(snapshot);
        AssertArea(Parent, area, i => 1000 + i, $"seed {seed}: a reset after the race");
        Assert.That(CopiedPages(Parent, Span(area, AreaLen * Page)), Is.Empty);
    }

    /// <summary>
    /// A fork, a snapshot and a write-watch restart dissolve the host copies while a writer,
    /// which never waits for UVm while a page is writable on the host, writes each page of a
    /// large area once, in order. Write access is taken from the copies before they are read,
    /// so no completed write may be lost; the fork's child and the snapshot hold, for every page,
    /// the snapshot's value or the one written; after a watch restart, every page written after
    /// it returned is listed.
    /// </summary>
    [Test, CancelAfter(60_000)]
    public void A_writer_racing_a_dissolve_loses_no_write([Values("Fork", "Snapshot", "ResetWriteWatch")] string call, [Values(5)] int rounds)
    {
        const int Big = 1024;
        Parent.FaultAroundPages = 1;
        ulong area = Parent.Map(Big * Page, Populated, At(AreaVa));
        VmSnapshot snapshot = Track(Parent.Snapshot());
        var budget = new LoopBudget($"{call} racing a writer", TimeSpan.FromSeconds(20));
        for (int round = 0; round < rounds; round++)
        {
            budget.Check($"{round} of {rounds} rounds");
            AddressSpace space = Track(snapshot.Instantiate()); // a space using host copies, whatever the last round did
            space.Space.Activate();
            for (ulong i = 0; i < Big / 2; i++) WriteU64(space, area + i * Page, i + 1);
            long done = Big / 2;
            var go = new ManualResetEventSlim();
            TestThread writer = TestThread.Start("writer", () =>
            {
                space.Space.Activate();
                go.Wait(TimeSpan.FromSeconds(30));
                for (ulong i = Big / 2; i < Big; i++)
                {
                    VmWriter<Fallible> w = space.Space.Writer(area + i * Page, 8);
                    IoResult<ulong> r = w.AtomicStore(i + 1);
                    if (!r.IsOk) throw new AssertionException($"write to page {i} failed: {r.Error}");
                    Volatile.Write(ref done, (long)i + 1);
                }
                VmSpace.Deactivate();
            });
            AddressSpace? child = null;
            VmSnapshot? taken = null;
            go.Set();
            switch (call)
            {
                case "Fork": child = Track(space.Fork()); break;
                case "Snapshot": taken = Track(space.Snapshot()); break;
                default: space.ResetWriteWatch(Span(area, Big * Page)); break;
            }
            long doneWhenReturned = Volatile.Read(ref done);
            writer.Join(TimeSpan.FromSeconds(30));
            space.Space.Activate();
            string what = $"{call}, round {round} ({doneWhenReturned - Big / 2} of {Big / 2} racing writes done when it returned)";
            TestContext.Out.WriteLine(what);
            for (ulong i = 0; i < Big; i++)
                Assert.That(HostU64(space, area + i * Page), Is.EqualTo(i + 1), $"{what}: page {i} lost its write");
            if (child != null)
            {
                for (ulong i = 0; i < Big; i++)
                    Assert.That(HostU64(child, area + i * Page), Is.EqualTo(i + 1).Or.EqualTo(i < Big / 2 ? i + 1 : 0UL), $"{what}: the child's page {i}");
                AssertHostMirrors(child);
                child.Dispose();
            }
            if (taken != null)
            {
                using AddressSpace instance = taken.Instantiate();
                for (ulong i = 0; i < Big; i++)
                    Assert.That(HostU64(instance, area + i * Page), Is.EqualTo(i + 1).Or.EqualTo(i < Big / 2 ? i + 1 : 0UL), $"{what}: the new snapshot's page {i}");
                taken.Dispose();
            }
            if (call == "ResetWriteWatch")
            {
                IReadOnlyList<ulong> written = space.WrittenPages(Span(area, Big * Page));
                // The write in flight when the call returned may have landed before the watch; every later one is listed.
                for (ulong i = (ulong)doneWhenReturned + 1; i < Big; i++)
                    Assert.That(written, Does.Contain(area + i * Page), $"{what}: page {i}, written after the restart returned, is listed");
                Assert.That(written.All(va => va >= area + Big / 2 * Page), Is.True, $"{what}: only the racing writes may be listed");
            }
            space.Space.Activate();
            AssertHostMirrors(space);
            space.Dispose();
            Parent.Space.Activate();
        }
    }

    /// <summary>
    /// A batch that the host refuses is undone, and its ranges are mapped again from the table,
    /// which drops the host copies there; so the copies it covers are read first and written
    /// back after the refill. A copy a concurrent writer makes or changes after they were read
    /// (the writer does not fault: the page is writable on the host) must not be lost: the
    /// refused call changed nothing, so every completed write must still be there.
    /// </summary>
    [Test, CancelAfter(60_000)]
    public void A_write_racing_a_refused_protect_is_not_lost([Values(20)] int rounds)
    {
        const int Big = 1024;
        Parent.FaultAroundPages = 1;
        ulong area = Parent.Map(Big * Page, Populated, At(AreaVa));
        VmSnapshot snapshot = Track(Parent.Snapshot());
        var budget = new LoopBudget("refused protects racing a writer", TimeSpan.FromSeconds(20));
        var lost = new List<string>();
        for (int round = 0; round < rounds && lost.Count == 0; round++)
        {
            budget.Check($"{round} of {rounds} rounds");
            Parent.Reset(snapshot);
            // The first half written before: the batch has copies to read (which takes a while).
            for (ulong i = 0; i < Big / 2; i++) WriteU64(Parent, area + i * Page, i + 1);
            long done = Big / 2;
            var go = new ManualResetEventSlim();
            TestThread writer = TestThread.Start("writer", () =>
            {
                Parent.Space.Activate();
                go.Wait(TimeSpan.FromSeconds(30));
                // Each page of the second half once, in order: a lost write stays lost.
                for (ulong i = Big / 2; i < Big; i++)
                {
                    VmWriter<Fallible> w = Parent.Space.Writer(area + i * Page, 8);
                    IoResult<ulong> r = w.AtomicStore(i + 1);
                    if (!r.IsOk) throw new AssertionException($"write to page {i} failed: {r.Error}");
                    Volatile.Write(ref done, (long)i + 1);
                }
                VmSpace.Deactivate();
            });
            Exception? e;
            using (HostRefusal.Arm(HostCallSite.Mprotect, ENOMEM, count: 1))
            {
                go.Set();
                e = Catch(() => Parent.Protect(Span(area, Big * Page), PageFlags.R));
            }
            writer.Join(TimeSpan.FromSeconds(30));
            Parent.Space.Activate();
            Assert.That(e, Is.InstanceOf<UVmException>(), $"round {round}: the protect was refused");
            for (ulong i = 0; i < (ulong)Volatile.Read(ref done); i++)
            {
                ulong v = HostU64(Parent, area + i * Page);
                if (v != i + 1) lost.Add($"round {round}: page {i} reads {v}, its completed write was {i + 1}");
            }
        }
        Assert.That(lost, Is.Empty, string.Join("\n", lost.Take(10)));
        AssertHostMirrors(Parent);
    }
}
