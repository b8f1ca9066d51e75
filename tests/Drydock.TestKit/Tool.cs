using System.Collections.Concurrent;

namespace Drydock.TestKit;

/// <summary>
/// Finds the external programs the fixtures run, and names the Debian package that provides one when it is
/// missing (test.sh installs them).
/// </summary>
public static class Tool
{
    private static readonly Dictionary<string, string> Packages = new(StringComparer.Ordinal)
    {
        ["qemu-img"] = "qemu-utils",
        ["qemu-io"] = "qemu-utils",
        ["qemu-nbd"] = "qemu-utils",
        ["qemu-storage-daemon"] = "qemu-system-common (pulled in by qemu-system-x86)",
        ["nbdkit"] = "nbdkit",
        ["nbdinfo"] = "libnbd-bin",
        ["nbdcopy"] = "libnbd-bin",
        ["setsid"] = "util-linux",
        ["sh"] = "dash",
        ["sleep"] = "coreutils",
    };

    private static readonly ConcurrentDictionary<string, string> Found = new(StringComparer.Ordinal);

    /// <summary>The Debian package that provides <paramref name="tool"/>, or null when the kit does not know it.</summary>
    public static string? DebianPackage(string tool) => Packages.GetValueOrDefault(tool);

    /// <summary>Whether <paramref name="tool"/> is on the PATH (or is an existing absolute path).</summary>
    public static bool IsAvailable(string tool) => TryFind(tool, out _);

    /// <summary>The full path of <paramref name="tool"/>.</summary>
    /// <exception cref="ToolNotFoundException">It is not installed; the message names the Debian package.</exception>
    public static string Find(string tool) =>
        TryFind(tool, out var path) ? path : throw new ToolNotFoundException(tool, DebianPackage(tool));

    private static bool TryFind(string tool, out string path)
    {
        if (Found.TryGetValue(tool, out path!))
        {
            return true;
        }

        if (Path.IsPathRooted(tool))
        {
            path = tool;
            return File.Exists(tool);
        }

        var directories = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
        foreach (var directory in directories)
        {
            var candidate = Path.Combine(directory, tool);
            if (File.Exists(candidate))
            {
                path = Found.GetOrAdd(tool, candidate);
                return true;
            }
        }

        path = string.Empty;
        return false;
    }
}

/// <summary>A program a fixture needs is not installed.</summary>
public sealed class ToolNotFoundException : Exception
{
    /// <summary>Creates the exception for <paramref name="tool"/>, provided by <paramref name="debianPackage"/>.</summary>
    public ToolNotFoundException(string tool, string? debianPackage)
        : base(debianPackage is null
            ? $"'{tool}' is not installed (not found on PATH)."
            : $"'{tool}' is not installed (not found on PATH): install the Debian package {debianPackage} (test.sh does: apt-get install {debianPackage.Split(' ')[0]}).")
    {
        ToolName = tool;
        DebianPackage = debianPackage;
    }

    /// <summary>The missing program.</summary>
    public string ToolName { get; }

    /// <summary>The Debian package that provides it, when known.</summary>
    public string? DebianPackage { get; }
}
