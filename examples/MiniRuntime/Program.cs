// A tiny runtime on UVm: a byte-code interpreter whose guest lives in a sandbox (Sandbox.cs,
// the only file that calls UVm): a 1 MiB read-only program image, a 16 MiB lazy heap with a
// guard page after it, a stack with a guard page below it. The sandbox is snapshotted once
// loaded and reset to the snapshot after every run. Guest bugs (a null or wild pointer, a
// write to the program, a heap or stack overflow) end their run with a fault report; clean
// runs are checked against C#, half of the example runs on thread-pool threads after awaits.
//
//   dotnet run --project examples/MiniRuntime -- [clean runs (default 200)]
using MiniRuntime;

int runs = args.Length > 0 ? int.Parse(args[0]) : 200;
if (runs < 1) throw new ArgumentOutOfRangeException(nameof(args), "the run count must be at least 1");
int failures = 0;

GuestProgram program = Guest.Build();
var sandbox = new Sandbox(program.Image, Guest.HeapHeader());
var cpu = new Interpreter(sandbox);
Console.WriteLine("MiniRuntime: a byte-code interpreter in a UVm sandbox of 64 MiB");
Console.WriteLine($"  image  0x{Sandbox.ImageBase:x}-0x{Sandbox.ImageBase + Sandbox.ImageSize:x}  read-only, 1 MiB: {program.CodeBytes} bytes of code, a table of {Guest.TableEntries} squares at 0x{Guest.Table:x}");
Console.WriteLine($"  heap   0x{Sandbox.HeapBase:x}-0x{Sandbox.HeapGuard:x}  read-write, 16 MiB, lazy; its header written at load");
Console.WriteLine($"  guard  0x{Sandbox.HeapGuard:x}-0x{Sandbox.HeapGuard + 4096:x}  after the heap");
Console.WriteLine($"  guard  0x{Sandbox.StackGuard:x}-0x{Sandbox.StackBase:x}  below the stack");
Console.WriteLine($"  stack  0x{Sandbox.StackBase:x}-0x{Sandbox.StackTop:x}  read-write, 64 KiB, lazy");
Console.WriteLine($"snapshot taken after loading ({sandbox.FramesInUse} frames in use); every run starts from it\n");

// Guest bugs, on the main thread: each ends its run with a fault, never an exception.
Console.WriteLine("faulting runs:");
(string Name, ulong Entry, ulong Argument)[] buggy =
[
    ("peek", program.Peek, 0x10),
    ("peek", program.Peek, 0xdead_beef_0000),
    ("fill", program.Fill, program.Sieve),
    ("fill", program.Fill, Sandbox.HeapGuard - 64),
    ("triangle", program.Triangle, 100_000),
];
foreach ((string name, ulong entry, ulong argument) in buggy)
{
    RunResult r = cpu.Run(entry, argument);
    Console.WriteLine($"  {Call(name, argument)}: {(r.Fault is { } f ? $"{f.Message} ({Why(f.Fault.Address, f.Message)})" : r.Outcome.ToString())}, pc 0x{r.Pc:x}, step {r.Steps}");
    sandbox.Reset();
}
Check(sandbox.GuardFaults == 2, "guard faults counted by the space: 2", $"guard faults counted: {sandbox.GuardFaults}");

// Clean runs, each after an await: the continuation runs on a thread-pool thread, and the
// sandbox's loads and stores work there as they do on the main thread (no activation).
bool mainWasPool = Thread.CurrentThread.IsThreadPoolThread;
await Task.Yield();
Console.WriteLine($"\nclean runs, each after an await (before the first await, on a thread-pool thread: {mainWasPool}; after it: {Thread.CurrentThread.IsThreadPoolThread}):");
int right = 0, onPool = 0, fresh = 0;
long compared = 0;
for (int i = 0; i < runs; i++)
{
    await Task.Yield();
    if (Thread.CurrentThread.IsThreadPoolThread) onPool++;
    ulong j = (ulong)(i / 4);
    (string name, ulong entry, ulong argument, Func<ulong, ulong> oracle) = (i % 4) switch
    {
        0 => ("sieve", program.Sieve, 1000 + j * 7919 % 49_000, new Func<ulong, ulong>(Guest.PrimesBelow)),
        1 => ("sumsq", program.SumSquares, 1000 + j * 10_007 % 64_536, Guest.SumOfSquares),
        2 => ("triangle", program.Triangle, 100 + j * 997 % 3_900, n => n * (n + 1) / 2),
        _ => ("peek", program.Peek, Guest.Table + 8 * (12_345 + j * 4_099 % 53_000), va => (va - Guest.Table) / 8 * ((va - Guest.Table) / 8)),
    };
    ulong expected = oracle(argument);
    ulong bootsBefore = sandbox.Load<ulong>(Sandbox.HeapBase + Guest.BootCounter);
    RunResult r = cpu.Run(entry, argument);
    ulong bootsAfter = sandbox.Load<ulong>(Sandbox.HeapBase + Guest.BootCounter);
    bool ok = r.Outcome == Outcome.Returned && r.Value == expected;
    if (ok) right++;
    if (bootsBefore == 0 && bootsAfter == (entry == program.Sieve ? 1UL : 0)) fresh++;
    if (i < 8 || !ok) Console.WriteLine($"  {Call(name, argument)} = {(r.Outcome == Outcome.Returned ? r.Value.ToString() : r.ToString())}{(ok ? "" : $", expected {expected}")}");
    compared += sandbox.Reset();
}
Console.WriteLine($"{runs} clean runs, {(double)compared / runs:0.0} pages compared per reset on average");
Check(right == runs, $"every clean run returned what C# computes ({runs} of {runs})", $"{runs - right} clean runs returned something else");
Check(onPool == runs, "every clean run ran on a thread-pool thread", $"{runs - onPool} clean runs ran elsewhere");
Check(fresh == runs, "every run started from the snapshot (boot counter 0; 1 after each sieve)", $"{runs - fresh} runs saw another run's heap");

// After the runs the heap is as the snapshot has it: the header, then zeros where the sieves marked.
byte[] heap = sandbox.ReadHeap(64 << 10);
byte[] header = Guest.HeapHeader();
Check(heap.AsSpan(0, header.Length).SequenceEqual(header) && heap.AsSpan(header.Length).IndexOfAnyExcept((byte)0) < 0,
    "after the runs the heap reads back its snapshot contents (header, then 64 KiB of zeros)", "the heap differs from its snapshot");
sandbox.Dispose();
Check(sandbox.FramesInUse == 0, "sandbox disposed: the pool holds no frame", $"{sandbox.FramesInUse} frames still in use after dispose");
Console.WriteLine(failures == 0 ? "mini runtime: all checks passed" : $"mini runtime: {failures} check(s) FAILED");
return failures == 0 ? 0 : 1;

void Check(bool ok, string passed, string failed)
{
    Console.WriteLine(ok ? $"  ok: {passed}" : $"  FAILED: {failed}");
    if (!ok) failures++;
}

// A call as the report shows it: addresses in hex, numbers in decimal.
static string Call(string routine, ulong argument) => routine is "peek" or "fill" ? $"{routine}(0x{argument:x})" : $"{routine}({argument})";

// What a fault at an address means in this runtime's layout.
static string Why(ulong address, string report) => address switch
{
    < 0x1000 => "null pointer",
    >= Sandbox.ImageBase and < Sandbox.ImageBase + Sandbox.ImageSize => "write to the program",
    >= Sandbox.HeapGuard and < Sandbox.HeapGuard + 0x1000 => "heap overflow",
    >= Sandbox.StackGuard and < Sandbox.StackBase => "stack overflow",
    >= Sandbox.SpaceSize => "wild pointer",
    _ => report,
};
