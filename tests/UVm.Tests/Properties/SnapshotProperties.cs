using FsCheck;
using FsCheck.Fluent;
using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;

namespace UVm.Tests.Properties;

/// <summary>
/// Snapshots against a model: random sequences of map, unmap, protect, write, snapshot, reset,
/// instantiate, fork, dispose of a snapshot and restart of the write watch, run on a real
/// address space and on a plain model (areas by slot, page contents, written pages). After every
/// step the space reads as the model says, the write watch lists exactly the pages the model
/// wrote since its restart, and instances and forks read as their snapshot or parent; at the
/// end of a case the host mirrors the page table and, everything disposed, the pool holds no
/// frame and no reservation.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class SnapshotProperties
{
    private const ulong Page = Paging.PageSize, MiB = 1UL << 20;
    private const int Slots = 4, PagesPerSlot = 8;
    private static readonly VaddrRange Watched = new(1 * MiB, (1 + Slots) * MiB);

    /// <summary>One step: <see cref="Kind"/> and its operands (slot, page, value or snapshot index, as the kind reads them).</summary>
    public readonly record struct Step(char Kind, int A, int B, int C)
    {
        public override string ToString() => Kind switch
        {
            'M' => $"map slot {A} {(B == 0 ? "lazy" : "populated")} {(C == 0 ? "R" : "RW")}",
            'U' => $"unmap slot {A}",
            'P' => $"protect slot {A} {(C == 0 ? "R" : "RW")}",
            'W' => $"write slot {A} page {B} value {C}",
            'S' => "snapshot",
            'R' => $"reset to snapshot {A}",
            'I' => $"instantiate snapshot {A}",
            'F' => "fork",
            'D' => $"dispose snapshot {A}",
            'G' => "restart the write watch",
            _ => $"? {Kind}",
        };
    }

    /// <summary>What a space holds in the model: slot → rights (RW or R), and page address → the value at its start (absent: zero).</summary>
    private sealed record Model(Dictionary<int, PageFlags> Areas, Dictionary<ulong, ulong> Values)
    {
        public Model Copy() => new(new Dictionary<int, PageFlags>(Areas), new Dictionary<ulong, ulong>(Values));
    }

    private static ulong SlotVa(int slot) => (ulong)(1 + slot) * MiB;

    private static readonly Gen<Step> Steps = Gen.Frequency(
        (3, Gen.Zip(Gen.Choose(0, Slots - 1), Gen.Zip(Gen.Choose(0, 1), Gen.Choose(0, 3))).Select(t => new Step('M', t.Item1, t.Item2.Item1, t.Item2.Item2 == 0 ? 0 : 1))),
        (1, Gen.Choose(0, Slots - 1).Select(s => new Step('U', s, 0, 0))),
        (1, Gen.Zip(Gen.Choose(0, Slots - 1), Gen.Choose(0, 2)).Select(t => new Step('P', t.Item1, 0, t.Item2 == 0 ? 0 : 1))),
        (8, Gen.Zip(Gen.Choose(0, Slots - 1), Gen.Zip(Gen.Choose(0, PagesPerSlot - 1), Gen.Choose(1, 1_000_000))).Select(t => new Step('W', t.Item1, t.Item2.Item1, t.Item2.Item2))),
        (2, Gen.Constant(new Step('S', 0, 0, 0))),
        (3, Gen.Choose(0, 3).Select(i => new Step('R', i, 0, 0))),
        (1, Gen.Choose(0, 3).Select(i => new Step('I', i, 0, 0))),
        (1, Gen.Constant(new Step('F', 0, 0, 0))),
        (1, Gen.Choose(0, 3).Select(i => new Step('D', i, 0, 0))),
        (1, Gen.Constant(new Step('G', 0, 0, 0))));

    [Test]
    public void Snapshot_reset_instantiate_fork_and_write_watch_agree_with_a_model()
    {
        var inputs = Gen.Zip(Gen.Elements(1, 4, 16), Gen.ListOf(Steps).Select(l => l.Take(40).ToArray()));
        PropertySuite.Check("snapshots against a model", 60, inputs, input =>
        {
            (int faultAround, Step[] steps) = input;
            using var pool = new FramePool(32 * MiB);
            RunCase(pool, faultAround, steps);
            Assert.That((pool.FramesInUse, pool.ReservedChunks), Is.EqualTo((0L, 0L)),
                $"everything disposed, the pool still holds frames or reservations (fault-around {faultAround}; {string.Join("; ", steps)})");
        });
    }

    private static void RunCase(FramePool pool, int faultAround, Step[] steps)
    {
        var space = new AddressSpace(new VmSpaceOptions { Size = 8 * MiB, Pool = pool }) { FaultAroundPages = faultAround };
        var snapshots = new List<(VmSnapshot Snapshot, Model Model)>();
        var model = new Model(new Dictionary<int, PageFlags>(), new Dictionary<ulong, ulong>());
        bool watching = false;
        var written = new SortedSet<ulong>();
        var done = new List<string>();
        try
        {
            space.Space.Activate();
            foreach (Step step in steps)
            {
                done.Add(step.ToString());
                string where = $"fault-around {faultAround}; steps: {string.Join("; ", done)}";
                Apply(step);
                AssertReadsAs(space, model, where);
                if (watching)
                    Assert.That(space.WrittenPages(Watched), Is.EqualTo(written.ToList()), $"WrittenPages differs from the pages written since the restart ({where})");
                else
                    Assert.That(space.WrittenPages(Watched), Is.Empty, where);
                PropertySuite.Tally(step.Kind switch { 'R' => "resets", 'I' => "instances", 'F' => "forks", 'S' => "snapshots", _ => "other steps" });
            }
            Assert.That(Harness.MirrorDiffs(space.Space), Is.Empty, $"host differs from the page table at the end ({string.Join("; ", done)})");
        }
        finally
        {
            VmSpace.Deactivate();
            space.Dispose();
            foreach ((VmSnapshot s, Model _) in snapshots) s.Dispose();
        }

        void Apply(Step step)
        {
            ulong va = SlotVa(step.A);
            switch (step.Kind)
            {
                case 'M':
                    if (model.Areas.ContainsKey(step.A)) return;
                    PageFlags flags = step.C == 0 ? PageFlags.R : PageFlags.RW;
                    space.Map(PagesPerSlot * Page, new AreaBackend.Alloc(Populate: step.B == 1), new VmMapOptions { Addr = va, Flags = flags });
                    model.Areas[step.A] = flags;
                    for (int p = 0; p < PagesPerSlot; p++) model.Values.Remove(va + (ulong)p * Page);
                    return;
                case 'U':
                    if (!model.Areas.Remove(step.A)) return;
                    space.Unmap(VaddrRange.FromLength(va, PagesPerSlot * Page));
                    for (int p = 0; p < PagesPerSlot; p++) model.Values.Remove(va + (ulong)p * Page);
                    return;
                case 'P':
                    if (!model.Areas.ContainsKey(step.A)) return;
                    model.Areas[step.A] = step.C == 0 ? PageFlags.R : PageFlags.RW;
                    space.Protect(VaddrRange.FromLength(va, PagesPerSlot * Page), model.Areas[step.A]);
                    return;
                case 'W':
                {
                    ulong page = va + (ulong)step.B * Page;
                    VmWriter<Fallible> w = space.Space.Writer(page, 8);
                    CopyResult r = w.WriteFallible(BitConverter.GetBytes((ulong)step.C));
                    bool writable = model.Areas.TryGetValue(step.A, out PageFlags f) && f.HasFlag(PageFlags.W);
                    Assert.That(r.IsOk, Is.EqualTo(writable), $"a write to {(writable ? "a writable" : "an unwritable")} page: {r.Error} {r.Fault}");
                    if (!writable) return;
                    model.Values[page] = (ulong)step.C;
                    if (watching) written.Add(page);
                    return;
                }
                case 'S':
                    if (snapshots.Count(s => !s.Snapshot.IsDisposed) >= 3) return;
                    snapshots.Add((space.Snapshot(), model.Copy()));
                    return;
                case 'R':
                {
                    if (step.A >= snapshots.Count || snapshots[step.A].Snapshot.IsDisposed) return;
                    (VmSnapshot s, Model m) = snapshots[step.A];
                    space.Reset(s);
                    model = m.Copy();
                    Assert.That(space.Reset(s), Is.Zero, "a reset right after a reset compares nothing");
                    return;
                }
                case 'I':
                {
                    if (step.A >= snapshots.Count || snapshots[step.A].Snapshot.IsDisposed) return;
                    (VmSnapshot s, Model m) = snapshots[step.A];
                    using (AddressSpace instance = s.Instantiate())
                    {
                        instance.Space.Activate();
                        Assert.That(instance.Areas, Is.EqualTo(s.Areas), "an instance has the snapshot's areas");
                        AssertReadsAs(instance, m, "an instance of the snapshot");
                        Assert.That(Harness.MirrorDiffs(instance.Space), Is.Empty, "an instance's host");
                    }
                    space.Space.Activate();
                    return;
                }
                case 'F':
                    using (AddressSpace child = space.Fork())
                    {
                        child.Space.Activate();
                        AssertReadsAs(child, model, "a fork");
                    }
                    space.Space.Activate();
                    return;
                case 'D':
                    if (step.A < snapshots.Count) snapshots[step.A].Snapshot.Dispose();
                    return;
                case 'G':
                    space.ResetWriteWatch(Watched);
                    watching = true;
                    written.Clear();
                    return;
            }
        }
    }

    /// <summary>Every page of every area of the model reads its value (zero when never written); a slot without an area faults.</summary>
    private static void AssertReadsAs(AddressSpace space, Model model, string where)
    {
        Assert.That(space.Areas.Select(a => (a.Range.Start, a.Flags)),
            Is.EqualTo(model.Areas.OrderBy(kv => kv.Key).Select(kv => (SlotVa(kv.Key), kv.Value))), $"areas ({where})");
        for (int slot = 0; slot < Slots; slot++)
        {
            bool mapped = model.Areas.ContainsKey(slot);
            for (int p = 0; p < PagesPerSlot; p++)
            {
                ulong page = SlotVa(slot) + (ulong)p * Page;
                VmReader<Fallible> r = space.Space.Reader(page, 8);
                IoResult<ulong> v = r.ReadVal<ulong>();
                if (!mapped)
                {
                    Assert.That(v.IsOk, Is.False, $"0x{page:x} reads though no area is there ({where})");
                    continue;
                }
                Assert.That(v.IsOk, Is.True, $"0x{page:x}: {v.Error} {v.Fault} ({where})");
                Assert.That(v.Value, Is.EqualTo(model.Values.GetValueOrDefault(page)), $"0x{page:x} ({where})");
            }
        }
    }
}
