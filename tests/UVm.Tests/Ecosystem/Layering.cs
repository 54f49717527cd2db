using System.Reflection;
using NetArchTest.Rules;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// The layers of UVm and their one-way arrows (docs/ARCHITECTURE.md): each layer may use the
/// ones below it, never one above. A reference upward fails this test, and so the build's test run.
/// </summary>
public sealed class Layering
{
    /// <summary>Bottom to top; <c>UVm</c> itself (the root namespace) is <c>Common/</c>.</summary>
    private static readonly string[] s_layers =
    [
        "UVm", "UVm.Interop", "UVm.Faults", "UVm.Io", "UVm.Frames", "UVm.PageTable", "UVm.Host", "UVm.Spaces", "UVm.Areas", "UVm.Diagnostics",
    ];

    private static readonly Assembly s_uvm = typeof(UVm.Spaces.VmSpace).Assembly;

    private static IEnumerable<TestCaseData> Layers() =>
        s_layers.Select((ns, i) => new TestCaseData(ns, s_layers.Skip(i + 1).ToArray()).SetArgDisplayNames(ns));

    [TestCaseSource(nameof(Layers))]
    public void A_layer_uses_no_layer_above_it(string layer, string[] above)
    {
        if (above.Length == 0) Assert.Pass("the top layer may read every other");
        PredicateList types = layer == "UVm"
            ? Types.InAssembly(s_uvm).That().ResideInNamespaceMatching(@"^UVm$")
            : Types.InAssembly(s_uvm).That().ResideInNamespaceMatching("^" + layer.Replace(".", @"\.") + "$");
        Assert.That(types.GetTypes(), Is.Not.Empty, $"precondition: layer {layer} has types");
        TestResult result = types.ShouldNot().HaveDependencyOnAny(above).GetResult();
        Assert.That(result.FailingTypeNames ?? [], Is.Empty, $"types of {layer} that use a layer above it ({string.Join(", ", above)})");
    }

    [TestCase("UVm.Areas")]
    [TestCase("UVm.Diagnostics")]
    public void Nothing_above_Spaces_sees_page_table_entries_or_cursors(string layer)
    {
        // Spaces offers PageSlot (and cursors) instead: the back doors around the cursor are closed.
        TestResult r = Types.InAssembly(s_uvm).That().ResideInNamespaceMatching("^" + layer.Replace(".", @"\.") + "$")
            .ShouldNot().HaveDependencyOnAny("UVm.PageTable").GetResult();
        Assert.That(r.FailingTypeNames ?? [], Is.Empty);
    }

    [Test]
    public void The_dependencies_between_layers_point_down_only()
    {
        // The whole matrix, printed for the record (docs/ARCHITECTURE.md draws it).
        var lines = new List<string>();
        var upward = new List<string>();
        for (int i = 0; i < s_layers.Length; i++)
        {
            var uses = new List<string>();
            for (int j = 0; j < s_layers.Length; j++)
            {
                if (i == j || s_layers[j] == "UVm") continue;
                bool used = !Types.InAssembly(s_uvm).That().ResideInNamespaceMatching("^" + s_layers[i].Replace(".", @"\.") + "$")
                    .ShouldNot().HaveDependencyOn(s_layers[j]).GetResult().IsSuccessful;
                if (!used) continue;
                uses.Add(s_layers[j]);
                if (j > i) upward.Add($"{s_layers[i]} -> {s_layers[j]}");
            }
            lines.Add($"{s_layers[i]} uses {(uses.Count == 0 ? "Common only" : string.Join(", ", uses))}");
        }
        TestContext.Progress.WriteLine("[layering]\n  " + string.Join("\n  ", lines));
        Assert.That(upward, Is.Empty);
    }

    [Test]
    public void Every_type_lives_in_a_layer()
    {
        var stray = s_uvm.GetTypes()
            .Where(t => t.Namespace != null && !s_layers.Contains(t.Namespace) && !t.Namespace.StartsWith("System", StringComparison.Ordinal)
                && !t.Namespace.StartsWith("Microsoft", StringComparison.Ordinal))
            .Select(t => t.FullName).ToList();
        Assert.That(stray, Is.Empty);
    }

    [Test]
    public void The_rule_would_catch_an_upward_reference()
    {
        // The rule, applied to a pair that really does point upward, must fail: it is not vacuous.
        TestResult r = Types.InAssembly(s_uvm).That().ResideInNamespaceMatching(@"^UVm\.Areas$")
            .ShouldNot().HaveDependencyOnAny("UVm.Spaces").GetResult();
        Assert.That(r.IsSuccessful, Is.False, "Areas uses Spaces: as a 'must not', the rule reports it");
    }
}
