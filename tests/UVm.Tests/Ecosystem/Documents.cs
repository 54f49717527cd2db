using System.Text.RegularExpressions;
using NUnit.Framework;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// The documents a user and a contributor look for are there and stay true: the README lists
/// every example and says the activation rule; CONTRIBUTING.md, SECURITY.md, CHANGELOG.md and
/// LICENSE exist; CONTRIBUTING.md gives the commands the API checks name; no document points
/// outside the repository.
/// </summary>
[TestFixture]
public sealed class Documents
{
    private static string Read(string path) => File.ReadAllText(Path.Combine(Tools.RepoRoot, path));

    private static IEnumerable<string> MarkdownFiles() =>
        Directory.GetFiles(Tools.RepoRoot, "*.md").Concat(Directory.GetFiles(Path.Combine(Tools.RepoRoot, "docs"), "*.md"))
            .Concat(Directory.GetFiles(Path.Combine(Tools.RepoRoot, "benchmarks"), "*.md", SearchOption.AllDirectories))
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"));

    [Test]
    public void The_README_lists_every_example()
    {
        string readme = Read("README.md");
        string[] examples = Directory.GetDirectories(Path.Combine(Tools.RepoRoot, "examples")).Select(Path.GetFileName).OfType<string>().ToArray();
        Assert.That(examples, Is.Not.Empty);
        foreach (string name in examples)
            Assert.That(readme, Does.Contain($"| `{name}` |"), $"README.md's table of examples has a row for examples/{name}");
    }

    [Test]
    public void The_README_states_the_activation_rule()
    {
        string readme = Read("README.md");
        Assert.That(readme, Does.Contain("**Activation.**").And.Contain("space.Activate()").And.Contain("UVmError.AccessDenied"));
    }

    [Test]
    public void The_documents_a_user_looks_for_are_there()
    {
        foreach (string file in new[] { "LICENSE", "CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md" })
            Assert.That(File.Exists(Path.Combine(Tools.RepoRoot, file)), Is.True, file);
        string contributing = Read("CONTRIBUTING.md");
        Assert.That(contributing, Does.Contain("dotnet format analyzers src/UVm/UVm.csproj --diagnostics RS0016 RS0017 --severity warn"),
            "CONTRIBUTING.md gives the command that updates PublicAPI.Unshipped.txt");
        Assert.That(contributing, Does.Contain("UVM_UPDATE_API=1 dotnet test tests/UVm.Tests/UVm.Tests.csproj --filter \"FullyQualifiedName~Ecosystem.PublicApi\""));
        Assert.That(contributing, Does.Contain("## Adding an area backend").And.Contain("## The layers"));
        string security = Read("SECURITY.md");
        Assert.That(security, Does.Contain("## The threat model").And.Contain("## Reporting a flaw").And.Contain("**Host pointers.**").And.Contain("**Code running in the process.**"));
    }

    [Test]
    public void No_document_points_outside_the_repository()
    {
        var links = new Regex(@"\b(?:https?|ftp)://\S+|\bwww\.\S+", RegexOptions.IgnoreCase);
        var found = new List<string>();
        foreach (string file in MarkdownFiles().Append(Path.Combine(Tools.RepoRoot, "LICENSE")))
            foreach (Match m in links.Matches(File.ReadAllText(file)))
                found.Add($"{Path.GetRelativePath(Tools.RepoRoot, file)}: {m.Value}");
        Assert.That(found, Is.Empty);
    }
}
