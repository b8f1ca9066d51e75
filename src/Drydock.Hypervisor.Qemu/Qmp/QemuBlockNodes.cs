using System.Text.Json;

namespace Drydock.Hypervisor.Qemu.Qmp;

/// <summary>A named dirty bitmap of a block node (<c>query-named-block-nodes</c> → <c>dirty-bitmaps</c>).</summary>
/// <param name="Name">Its name.</param>
/// <param name="Recording">Whether it records writes.</param>
/// <param name="Busy">Whether an operation (an export, a job) holds it.</param>
/// <param name="Persistent">Whether it is stored in the qcow2 image.</param>
/// <param name="Inconsistent">Whether it was loaded in-use from an image not closed cleanly.</param>
/// <param name="Granularity">Bytes per bit.</param>
/// <param name="Count">Dirty bytes.</param>
public sealed record QemuBitmap(string Name, bool Recording, bool Busy, bool Persistent, bool Inconsistent, long Granularity, long Count);

/// <summary>A block node as <c>query-named-block-nodes</c> (flat) describes it.</summary>
/// <param name="NodeName">The node name.</param>
/// <param name="Driver">The block driver (<c>qcow2</c>, <c>raw</c>, <c>file</c>, <c>copy-before-write</c>, …).</param>
/// <param name="VirtualSize">The guest-visible size in bytes.</param>
/// <param name="FileName">The image file name QEMU reports (may be a <c>json:</c> pseudo-name).</param>
/// <param name="ReadOnly">Whether the node is read-only.</param>
/// <param name="Bitmaps">Its named dirty bitmaps.</param>
public sealed record QemuBlockNode(string NodeName, string Driver, ulong VirtualSize, string? FileName, bool ReadOnly, IReadOnlyList<QemuBitmap> Bitmaps)
{
    /// <summary>Parses the reply of <c>query-named-block-nodes</c>.</summary>
    /// <param name="reply">The <c>return</c> array.</param>
    /// <returns>The nodes that have a name.</returns>
    public static IReadOnlyList<QemuBlockNode> ParseList(JsonElement reply)
    {
        var nodes = new List<QemuBlockNode>();
        foreach (var node in reply.EnumerateArray())
        {
            var name = Str(node, "node-name");
            if (string.IsNullOrEmpty(name))
            {
                continue;
            }

            var bitmaps = new List<QemuBitmap>();
            if (node.TryGetProperty("dirty-bitmaps", out var list) && list.ValueKind == JsonValueKind.Array)
            {
                foreach (var b in list.EnumerateArray())
                {
                    // Unnamed bitmaps belong to block jobs and filters (copy-before-write keeps some): not ours to see.
                    if (Str(b, "name") is { Length: > 0 } bitmapName)
                    {
                        bitmaps.Add(new QemuBitmap(bitmapName, Bool(b, "recording"), Bool(b, "busy"), Bool(b, "persistent"), Bool(b, "inconsistent"), Long(b, "granularity"), Long(b, "count")));
                    }
                }
            }

            ulong size = 0;
            if (node.TryGetProperty("image", out var image) && image.TryGetProperty("virtual-size", out var vs) && vs.TryGetUInt64(out var s))
            {
                size = s;
            }

            nodes.Add(new QemuBlockNode(name, Str(node, "drv") ?? string.Empty, size, Str(node, "file"), Bool(node, "ro"), bitmaps));
        }

        return nodes;
    }

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static bool Bool(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    private static long Long(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.TryGetInt64(out var l) ? l : 0;
}

/// <summary>An export (<c>query-block-exports</c>).</summary>
/// <param name="Id">The export id.</param>
/// <param name="NodeName">The exported node.</param>
/// <param name="ShuttingDown">Whether it is being removed.</param>
/// <param name="Type">The export type (<c>nbd</c>, <c>vhost-user-blk</c>, <c>fuse</c>).</param>
public sealed record QemuBlockExport(string Id, string NodeName, bool ShuttingDown, string Type = "nbd")
{
    /// <summary>Parses the reply of <c>query-block-exports</c>.</summary>
    /// <param name="reply">The <c>return</c> array.</param>
    /// <returns>The exports.</returns>
    public static IReadOnlyList<QemuBlockExport> ParseList(JsonElement reply) =>
        [.. reply.EnumerateArray().Select(e => new QemuBlockExport(
            e.GetProperty("id").GetString() ?? string.Empty,
            e.TryGetProperty("node-name", out var n) ? n.GetString() ?? string.Empty : string.Empty,
            e.TryGetProperty("shutting-down", out var sd) && sd.ValueKind == JsonValueKind.True,
            e.TryGetProperty("type", out var t) ? t.GetString() ?? string.Empty : string.Empty))];
}

/// <summary>One parent → child edge of the block graph.</summary>
/// <param name="Parent">The parent's graph id.</param>
/// <param name="Child">The child's graph id.</param>
/// <param name="Name">The child role (<c>file</c>, <c>target</c>, <c>root</c>, …).</param>
/// <param name="Permissions">What the parent holds on the child (<c>write</c>, <c>consistent-read</c>, …).</param>
public sealed record QemuGraphEdge(long Parent, long Child, string Name, IReadOnlyList<string> Permissions)
{
    /// <summary>Whether the parent may write through this edge.</summary>
    public bool Writes => Permissions.Contains("write");
}

/// <summary>One vertex of the block graph: a node, or a block backend (a device or an export).</summary>
/// <param name="Id">The graph id.</param>
/// <param name="Name">The node name, or a backend's name (often empty for exports).</param>
/// <param name="Type">The kind: <c>block-driver</c>, <c>block-backend</c>, <c>block-job</c>.</param>
public sealed record QemuGraphNode(long Id, string Name, string Type);

/// <summary>
/// The whole block graph (<c>x-debug-query-block-graph</c>): who writes to which node. Used to check that every writer
/// of a disk goes through its front node before a snapshot filter is inserted (a writer attached to the disk node
/// directly would change the "snapshot" silently), and to find where a capture's filter sits.
/// </summary>
/// <param name="Nodes">The vertices.</param>
/// <param name="Edges">The edges.</param>
public sealed record QemuBlockGraph(IReadOnlyList<QemuGraphNode> Nodes, IReadOnlyList<QemuGraphEdge> Edges)
{
    /// <summary>Parses the reply of <c>x-debug-query-block-graph</c>.</summary>
    /// <param name="reply">The <c>return</c> object.</param>
    /// <returns>The graph.</returns>
    public static QemuBlockGraph Parse(JsonElement reply) => new(
        [.. reply.GetProperty("nodes").EnumerateArray().Select(n => new QemuGraphNode(
            n.GetProperty("id").GetInt64(), n.GetProperty("name").GetString() ?? string.Empty, n.GetProperty("type").GetString() ?? string.Empty))],
        [.. reply.GetProperty("edges").EnumerateArray().Select(e => new QemuGraphEdge(
            e.GetProperty("parent").GetInt64(), e.GetProperty("child").GetInt64(), e.GetProperty("name").GetString() ?? string.Empty,
            [.. e.GetProperty("perm").EnumerateArray().Select(p => p.GetString() ?? string.Empty)]))]);

    /// <summary>The vertex of a named block node.</summary>
    /// <param name="nodeName">The node name.</param>
    /// <returns>The vertex, or null.</returns>
    public QemuGraphNode? Find(string nodeName) =>
        Nodes.FirstOrDefault(n => n.Type == "block-driver" && string.Equals(n.Name, nodeName, StringComparison.Ordinal));

    /// <summary>The parents of a node, with the edges that lead to it.</summary>
    /// <param name="nodeName">The child's node name.</param>
    /// <returns>Parent vertex and edge pairs.</returns>
    public IReadOnlyList<(QemuGraphNode Parent, QemuGraphEdge Edge)> ParentsOf(string nodeName)
    {
        if (Find(nodeName) is not { } child)
        {
            return [];
        }

        return [.. Edges.Where(e => e.Child == child.Id).Select(e => (Nodes.First(n => n.Id == e.Parent), e))];
    }

    /// <summary>The named child of a node (e.g. its <c>file</c>).</summary>
    /// <param name="nodeName">The parent's node name.</param>
    /// <param name="role">The child role.</param>
    /// <returns>The child's node name, or null.</returns>
    public string? ChildOf(string nodeName, string role)
    {
        if (Find(nodeName) is not { } parent)
        {
            return null;
        }

        var edge = Edges.FirstOrDefault(e => e.Parent == parent.Id && e.Name == role);
        return edge is null ? null : Nodes.FirstOrDefault(n => n.Id == edge.Child)?.Name;
    }

    /// <summary>Describes a parent for a message: its node name, or what kind of user it is.</summary>
    /// <param name="parent">The vertex.</param>
    /// <returns>For example <c>node 'fmt0'</c> or <c>a block backend (device or export)</c>.</returns>
    public static string Describe(QemuGraphNode parent) => parent.Type switch
    {
        "block-driver" => $"node '{parent.Name}'",
        "block-backend" when parent.Name.Length > 0 => $"device '{parent.Name}'",
        "block-backend" => "a block backend (a device or an export)",
        "block-job" => $"block job '{parent.Name}'",
        _ => $"{parent.Type} '{parent.Name}'",
    };
}
