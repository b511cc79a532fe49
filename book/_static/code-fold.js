// A "Hide code" / "Show code" switch in the page header. It hides code cells' inputs only (prose and outputs
// stay), and the choice is kept from page to page.
(function () {
  const KEY = 'dlfs-code-hidden';
  const root = document.documentElement;
  let stored = null;
  try { stored = localStorage.getItem(KEY); } catch (e) { /* storage may be off: the switch still works */ }
  if (stored === '1') root.classList.add('code-hidden');
  function label(btn) { btn.textContent = root.classList.contains('code-hidden') ? 'Show code' : 'Hide code'; }
  document.addEventListener('DOMContentLoaded', function () {
    if (!document.querySelector('.cell .cell_input')) return;   // a page with no code has no switch
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'btn btn-sm code-fold-toggle';
    btn.title = 'Fold or unfold the code of every cell on this page';
    label(btn);
    btn.addEventListener('click', function () {
      root.classList.toggle('code-hidden');
      try { localStorage.setItem(KEY, root.classList.contains('code-hidden') ? '1' : '0'); } catch (e) {}
      label(btn);
    });
    const bar = document.querySelector('.article-header-buttons') || document.querySelector('.bd-header-article') ||
                document.querySelector('article');
    bar.prepend(btn);
  });
})();
