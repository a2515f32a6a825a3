# mk/install.mk - `make install` and `make uninstall`, included by the top
# Makefile (after its PREFIX, DESTDIR, BINDIR, MANDIR, SHAREDIR and B).
# Installs like any Unix tool: the binary, the two manuals, and the
# ready-to-copy service files under $(SHAREDIR)/examples; the paths of the
# binary and the examples in all of them are rewritten to where they went.  Nothing is enabled or
# started: which supervisor runs the farm is the operator's choice.
# Packagers: make install DESTDIR=/tmp/pkg PREFIX=/usr

INSTALL      ?= install
MAN1DIR      ?= $(MANDIR)/man1
MAN5DIR      ?= $(MANDIR)/man5
EXAMPLESDIR  ?= $(SHAREDIR)/examples
# What gets installed as the binary; tests point it at a prebuilt one so
# that installing never rebuilds.
INSTALL_BIN  ?= $(B)/mpfarm

# example file (under etc/) -> installed mode
INSTALL_EXAMPLES = \
	mpfarm.conf.example:0644 \
	systemd/mpfarm.service:0644 \
	supervisord/mpfarm.conf:0644 \
	logrotate.d/mpfarm:0644 \
	runit/mpfarm/run:0755 \
	runit/mpfarm/finish:0755 \
	runit/mpfarm/check:0755 \
	runit/mpfarm/log/run:0755 \
	systemd/mpfarm-serve.service:0644 \
	supervisord/mpfarm-serve.conf:0644 \
	runit/mpfarm-serve/run:0755

install: $(INSTALL_BIN)
	$(INSTALL) -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(MAN1DIR)' \
	    '$(DESTDIR)$(MAN5DIR)' '$(DESTDIR)$(EXAMPLESDIR)'
	$(INSTALL) -m 0755 '$(INSTALL_BIN)' '$(DESTDIR)$(BINDIR)/mpfarm'
	@set -e; for e in mpfarm.1:$(MAN1DIR) mpfarm.conf.5:$(MAN5DIR) \
	    $(addprefix etc/,$(INSTALL_EXAMPLES)); do \
	  f=$${e%:*}; m=$${e##*:}; \
	  case $$f in \
	  etc/*) d='$(DESTDIR)$(EXAMPLESDIR)'/$${f#etc/} ;; \
	  *) d="$(DESTDIR)$$m/$$f"; m=0644 ;; \
	  esac; \
	  echo "install $$f -> $$d"; \
	  $(INSTALL) -d "$$(dirname "$$d")"; \
	  sed -e 's|/usr/local/bin/mpfarm|$(BINDIR)/mpfarm|g' \
	      -e 's|/usr/local/share/mpfarm|$(SHAREDIR)|g' "$$f" >"$$d.tmp"; \
	  chmod "$$m" "$$d.tmp"; mv -f "$$d.tmp" "$$d"; \
	done

uninstall:
	rm -f '$(DESTDIR)$(BINDIR)/mpfarm' '$(DESTDIR)$(MAN1DIR)/mpfarm.1' \
	    '$(DESTDIR)$(MAN5DIR)/mpfarm.conf.5'
	@for e in $(INSTALL_EXAMPLES); do \
	  rm -f '$(DESTDIR)$(EXAMPLESDIR)'/$${e%:*}; done
	-rmdir '$(DESTDIR)$(EXAMPLESDIR)/runit/mpfarm/log' \
	    '$(DESTDIR)$(EXAMPLESDIR)/runit/mpfarm' \
	    '$(DESTDIR)$(EXAMPLESDIR)/runit/mpfarm-serve' '$(DESTDIR)$(EXAMPLESDIR)/runit' \
	    '$(DESTDIR)$(EXAMPLESDIR)/systemd' '$(DESTDIR)$(EXAMPLESDIR)/supervisord' \
	    '$(DESTDIR)$(EXAMPLESDIR)/logrotate.d' '$(DESTDIR)$(EXAMPLESDIR)' \
	    '$(DESTDIR)$(SHAREDIR)' 2>/dev/null
