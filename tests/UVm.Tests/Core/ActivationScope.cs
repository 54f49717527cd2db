using System.Runtime.CompilerServices;
using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Ecosystem;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Core;

/// <summary>
/// The activation scope <see cref="VmSpace.Activate"/> returns: it restores what was active
/// before, nests, refuses to be disposed out of order or on another thread (changing nothing),
/// and cannot be kept across an await; after an await that lands on another thread, readers are
/// refused there and the one-call accessors still work.
/// </summary>
[NonParallelizable]
public sealed class ActivationScope : SpaceFixture
{
    [TearDown]
    public void DeactivateAll() => VmSpace.Deactivate();

    /// <summary>Disposes <paramref name="scope"/>; what it threw (a ref struct cannot go into Assert.Throws's lambda).</summary>
    private static Exception? DisposeCatching(VmActivation scope)
    {
        try
        {
            scope.Dispose();
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }

    [Test]
    public void Scopes_nest_and_each_restores_what_was_active_before_it()
    {
        VmSpace other = NewSpace(64 * MiB);
        Assert.That(VmSpace.Current, Is.Null, "precondition");
        using (Space.Activate())
        {
            Assert.That(VmSpace.Current, Is.SameAs(Space));
            using (other.Activate())
            {
                Assert.That(VmSpace.Current, Is.SameAs(other));
                using (Space.Activate()) Assert.That(VmSpace.Current, Is.SameAs(Space), "the same space again, nested");
                Assert.That(VmSpace.Current, Is.SameAs(other));
            }
            Assert.That(VmSpace.Current, Is.SameAs(Space));
        }
        Assert.That(VmSpace.Current, Is.Null);
    }

    [Test]
    public void A_scope_restores_an_activation_whose_scope_was_ignored()
    {
        VmSpace other = NewSpace(64 * MiB);
        Space.Activate(); // the old way: the scope is dropped
        using (other.Activate()) Assert.That(VmSpace.Current, Is.SameAs(other));
        Assert.That(VmSpace.Current, Is.SameAs(Space));
    }

    [Test]
    public void Disposing_out_of_order_throws_and_changes_nothing()
    {
        VmSpace other = NewSpace(64 * MiB);
        VmActivation outer = Space.Activate();
        VmActivation inner = other.Activate();

        Exception? e = DisposeCatching(outer);
        Assert.That(e, Is.InstanceOf<InvalidOperationException>());
        Assert.That(e!.Message, Does.Contain("reverse order"));
        Assert.That(VmSpace.Current, Is.SameAs(other), "nothing changed");

        inner.Dispose();
        Assert.That(VmSpace.Current, Is.SameAs(Space));
        outer.Dispose();
        Assert.That(VmSpace.Current, Is.Null, "in order, both restore");
    }

    [Test]
    public void Disposing_twice_or_a_default_scope_does_nothing()
    {
        VmSpace other = NewSpace(64 * MiB);
        using (Space.Activate())
        {
            VmActivation inner = other.Activate();
            inner.Dispose();
            inner.Dispose();
            Assert.That(VmSpace.Current, Is.SameAs(Space), "the second Dispose did not restore again");
            default(VmActivation).Dispose();
            Assert.That(VmSpace.Current, Is.SameAs(Space));
        }
        Assert.That(VmSpace.Current, Is.Null);
    }

    [Test]
    public void A_closed_scope_disposed_after_a_newer_one_opened_is_refused()
    {
        VmSpace other = NewSpace(64 * MiB);
        VmActivation first = Space.Activate();
        first.Dispose();
        using (other.Activate())
        {
            Assert.That(DisposeCatching(first), Is.InstanceOf<InvalidOperationException>());
            Assert.That(VmSpace.Current, Is.SameAs(other), "nothing changed");
        }
        Assert.That(VmSpace.Current, Is.Null);
    }

    [Test]
    public void Deactivate_inside_a_scope_clears_only_what_is_active()
    {
        using (Space.Activate())
        {
            VmSpace.Deactivate();
            Assert.That(VmSpace.Current, Is.Null);
            VmSpace other = NewSpace(64 * MiB);
            using (other.Activate()) Assert.That(VmSpace.Current, Is.SameAs(other));
            Assert.That(VmSpace.Current, Is.Null, "the inner scope restored the deactivated state");
        }
        Assert.That(VmSpace.Current, Is.Null);
    }

    [Test]
    public void Disposing_the_activated_space_inside_its_scope_deactivates_it_and_the_scope_still_restores()
    {
        VmSpace other = NewSpace(64 * MiB);
        using (Space.Activate())
        {
            using (other.Activate())
            {
                other.Dispose();
                Assert.That(VmSpace.Current, Is.Null);
                Assert.That(other.IsActiveOnCurrentThread, Is.False);
            }
            Assert.That(VmSpace.Current, Is.SameAs(Space));
        }
    }

    [Test]
    public void Activating_a_disposed_space_throws_and_opens_no_scope()
    {
        VmSpace other = NewSpace(64 * MiB);
        other.Dispose();
        using (Space.Activate())
        {
            Assert.Throws<ObjectDisposedException>(() => other.Activate());
            Assert.That(VmSpace.Current, Is.SameAs(Space));
        }
        Assert.That(VmSpace.Current, Is.Null, "the outer scope was still the innermost one");
    }

    [Test, CancelAfter(30_000)]
    public unsafe void Disposing_on_another_thread_throws_and_changes_nothing_on_either_thread()
    {
        VmSpace other = NewSpace(64 * MiB);
        VmActivation scope = Space.Activate();
        // Only unsafe code can move the scope to another thread: it lives on this thread's stack,
        // which stays alive while the other thread uses it (this one waits).
        nint at = (nint)Unsafe.AsPointer(ref scope);
        Exception? thrown = null;
        VmSpace? before = null, after = null;
        Deadlines.OnOtherThread(() =>
        {
            using (other.Activate())
            {
                before = VmSpace.Current;
                try { Unsafe.AsRef<VmActivation>((void*)at).Dispose(); }
                catch (Exception e) { thrown = e; }
                after = VmSpace.Current;
            }
        }, "disposer");

        Assert.That(thrown, Is.InstanceOf<InvalidOperationException>());
        Assert.That(thrown!.Message, Does.Contain("another thread"));
        Assert.That(before, Is.SameAs(other));
        Assert.That(after, Is.SameAs(other), "the other thread's activation is unchanged");
        Assert.That(VmSpace.Current, Is.SameAs(Space), "this thread's activation is unchanged");
        scope.Dispose();
        Assert.That(VmSpace.Current, Is.Null, "the scope still works on its own thread");
    }

    [Test, CancelAfter(60_000)]
    public void After_an_await_on_another_thread_readers_are_refused_and_one_call_access_works()
    {
        const ulong va = 0x40_0000;
        using (UFrameOf(va, 0x1234_5678_9ABC_DEF0UL)) { }
        int startThread = 0, continuationThread = 0;
        bool activeBeforeAwait = false, activeAfterAwait = true, stillActiveOnStarter = false;
        UVmError? readerError = null;
        ulong readAfterAwait = 0, readInNewScope = 0;
        VmSpace? currentAfterScope = Space;
        Task? run = null;

        var starter = TestThread.Start("starter", () =>
        {
            var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            run = Body(gate.Task);
            Task.Run(gate.SetResult); // completed by the thread pool: the continuation cannot come back here
            stillActiveOnStarter = Space.IsActiveOnCurrentThread;
            VmSpace.Deactivate();
        });
        starter.Join();
        Assert.That(run, Is.Not.Null);
        Assert.That(run!.Wait(TimeSpan.FromSeconds(30)), Is.True, "the continuation ran");
        run.GetAwaiter().GetResult();

        Assert.That(continuationThread, Is.Not.EqualTo(startThread), "precondition: the continuation ran on another thread");
        Assert.That(activeBeforeAwait, Is.True);
        Assert.That(stillActiveOnStarter, Is.True, "documented: a scope-less activation stays on the thread that made it");
        Assert.That(activeAfterAwait, Is.False, "activation does not follow the continuation");
        Assert.That(readerError, Is.EqualTo(UVmError.AccessDenied), "a reader is refused on the new thread");
        Assert.That(readAfterAwait, Is.EqualTo(0x1234_5678_9ABC_DEF0UL), "the one-call accessor is bound to the space, not the thread");
        Assert.That(readInNewScope, Is.EqualTo(0x1234_5678_9ABC_DEF0UL), "activating again after the await works");
        Assert.That(currentAfterScope, Is.Null, "and its scope restored the continuation thread's state");

        async Task Body(Task gate)
        {
            startThread = Environment.CurrentManagedThreadId;
            Space.Activate(); // a scope cannot cross the await (CS4007): the old, scope-less way
            activeBeforeAwait = Space.IsActiveOnCurrentThread;
            await gate;
            continuationThread = Environment.CurrentManagedThreadId;
            activeAfterAwait = Space.IsActiveOnCurrentThread;
            try { Space.Reader(va, 8); }
            catch (UVmException e) { readerError = e.Error; }
            Assert.That(Space.TryRead(va, out readAfterAwait), Is.True);
            using (Space.Activate())
            {
                var reader = Space.Reader(va, 8);
                readInNewScope = reader.ReadVal<ulong>().Unwrap();
            }
            currentAfterScope = VmSpace.Current;
        }
    }

    /// <summary>Maps a frame at <paramref name="va"/> whose first 8 bytes hold <paramref name="tag"/>; returns its handle.</summary>
    private UFrame UFrameOf(ulong va, ulong tag)
    {
        UFrame f = TaggedFrame(tag);
        MapAt(va, f);
        return f;
    }

    [Test, CancelAfter(240_000), Category("Slow")]
    public void The_compiler_refuses_a_scope_kept_across_an_await()
    {
        string dir = Tools.NewTempDir("uvm-await");
        try
        {
            string uvm = typeof(VmSpace).Assembly.Location;
            File.WriteAllText(Path.Combine(dir, "Probe.csproj"),
                "<Project Sdk=\"Microsoft.NET.Sdk\"><PropertyGroup><TargetFramework>net10.0</TargetFramework><LangVersion>latest</LangVersion>" +
                "<Nullable>enable</Nullable><ImplicitUsings>enable</ImplicitUsings></PropertyGroup>" +
                $"<ItemGroup><Reference Include=\"UVm\"><HintPath>{uvm}</HintPath></Reference></ItemGroup></Project>");
            File.WriteAllText(Path.Combine(dir, "Probe.cs"), """
                using UVm.Spaces;
                public static class Probe
                {
                    public static async Task Fine(VmSpace s) { s.Activate(); using (s.Activate()) { } await Task.Yield(); }
                    public static async Task KeptAcrossAwait(VmSpace s) { using (s.Activate()) { await Task.Yield(); } }
                }
                """);
            (int code, string output) = Tools.Run(Tools.Dotnet, ["build", "-nologo", "-v", "quiet", "-p:UseSharedCompilation=false"], dir, TimeSpan.FromMinutes(3));
            Assert.That(code, Is.Not.Zero, output);
            Assert.That(output, Does.Contain("Probe.cs(5,").And.Contain("CS4007"), output);
            Assert.That(output, Does.Not.Contain("Probe.cs(4,"), "activating without keeping the scope across the await compiles");
        }
        finally
        {
            Tools.DeleteQuietly(dir);
        }
    }
}
