using System.Text.Json;

namespace Drydock.Hypervisor.Libvirt.Xml;

/// <summary>One dirty bitmap as QEMU reports it (<c>query-named-block-nodes</c>, <c>dirty-bitmaps</c>).</summary>
/// <param name="Name">The bitmap's name.</param>
/// <param name="Recording">Whether it records writes.</param>
/// <param name="Busy">Whether an operation holds it.</param>
/// <param name="Persistent">Whether it is stored in the qcow2 file.</param>
/// <param name="Inconsistent">Whether it was not stored cleanly (QEMU killed): it can only be removed.</param>
/// <param name="Granularity">Bytes per bit.</param>
/// <param name="Count">Dirty bytes.</param>
internal sealed record QemuBitmap(string Name, bool Recording, bool Busy, bool Persistent, bool Inconsistent, long Granularity, long Count);

/// <summary>Parses the dirty bitmaps of block nodes from QMP replies and from <c>qemu-img info --output=json</c>.</summary>
internal static class QemuBitmaps
{
    /// <summary>
    /// The bitmaps per node name from a <c>query-named-block-nodes</c> reply (<c>{"return":[…]}</c>) as
    /// <c>virDomainQemuMonitorCommand</c> returns it.
    /// </summary>
    /// <exception cref="FormatException">Not such a reply.</exception>
    public static IReadOnlyDictionary<string, IReadOnlyList<QemuBitmap>> ParseNamedBlockNodes(string reply)
    {
        try
        {
            using var document = JsonDocument.Parse(reply);
            if (document.RootElement.TryGetProperty("error", out var error))
            {
                throw new FormatException($"QEMU refused query-named-block-nodes: {error}");
            }

            var result = new Dictionary<string, IReadOnlyList<QemuBitmap>>(StringComparer.Ordinal);
            foreach (var node in document.RootElement.GetProperty("return").EnumerateArray())
            {
                var nodeName = node.GetProperty("node-name").GetString() ?? string.Empty;
                var bitmaps = new List<QemuBitmap>();
                if (node.TryGetProperty("dirty-bitmaps", out var list))
                {
                    foreach (var bitmap in list.EnumerateArray())
                    {
                        bitmaps.Add(new QemuBitmap(
                            bitmap.GetProperty("name").GetString() ?? string.Empty,
                            Flag(bitmap, "recording"),
                            Flag(bitmap, "busy"),
                            Flag(bitmap, "persistent"),
                            Flag(bitmap, "inconsistent"),
                            bitmap.TryGetProperty("granularity", out var granularity) ? granularity.GetInt64() : 0,
                            bitmap.TryGetProperty("count", out var count) ? count.GetInt64() : 0));
                    }
                }

                result[nodeName] = bitmaps;
            }

            return result;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new FormatException($"Unexpected query-named-block-nodes reply: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// The bitmaps of a closed qcow2 image from <c>qemu-img info --output=json</c>: flag <c>in-use</c> on a closed
    /// image means it was not stored cleanly (inconsistent); <c>auto</c> means it records writes.
    /// </summary>
    /// <exception cref="FormatException">Not such output.</exception>
    public static IReadOnlyList<QemuBitmap> ParseImageInfo(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json);
            var bitmaps = new List<QemuBitmap>();
            if (document.RootElement.TryGetProperty("format-specific", out var specific)
                && specific.TryGetProperty("data", out var data)
                && data.TryGetProperty("bitmaps", out var list))
            {
                foreach (var bitmap in list.EnumerateArray())
                {
                    var flags = bitmap.TryGetProperty("flags", out var flagList) ? flagList.EnumerateArray().Select(f => f.GetString()).ToList() : [];
                    bitmaps.Add(new QemuBitmap(
                        bitmap.GetProperty("name").GetString() ?? string.Empty,
                        Recording: flags.Contains("auto"),
                        Busy: false,
                        Persistent: true,
                        Inconsistent: flags.Contains("in-use"),
                        bitmap.TryGetProperty("granularity", out var granularity) ? granularity.GetInt64() : 0,
                        Count: 0));
                }
            }

            return bitmaps;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new FormatException($"Unexpected qemu-img info output: {ex.Message}", ex);
        }
    }

    private static bool Flag(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.True;
}
